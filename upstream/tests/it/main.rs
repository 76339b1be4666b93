//! The proxy against an in-process fake upstream on 127.0.0.1 that can misbehave in every way
//! the fault matrix asks for. The fake serves real narinfo text, signed with a real key; its
//! "NARs" are arbitrary bytes, which is all the proxy's verification looks at.

// Items are `pub` for the modules of this test binary; nothing is exported.
#![allow(unreachable_pub)]

mod fake;
mod faults;
mod flow;
mod guix;
mod resilience;

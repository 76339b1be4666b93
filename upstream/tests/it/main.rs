//! The proxy against an in-process fake upstream on 127.0.0.1 (`test_support::fake_upstream`)
//! that can misbehave in every way the fault matrix asks for.

// Items are `pub` for the modules of this test binary; nothing is exported.
#![allow(unreachable_pub)]

mod faults;
mod flow;
mod guix;
mod resilience;

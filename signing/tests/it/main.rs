//! Integration tests of the signing crate: Guix signatures against the golden narinfo and the
//! test vector of docs/protocol.md §5.3, and against libgcrypt itself (through Guile).

mod guix;
mod key_files;
mod libgcrypt;

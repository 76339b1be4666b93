//! Pure wire formats of Nix binary caches, shared by subserve's crates without pulling in sqlite or HTTP.
//!
//! Everything here is a pure function of its input: Nix32 ([`nixbase32`]), content hashes
//! ([`hash`]), store path names ([`store_path`]), NAR file names ([`nar_file`]), the narinfo text ([`narinfo`]) and the NAR
//! archive framing ([`nar`]).

pub mod compression;
pub mod dialect;
pub mod error;
pub mod guix;
pub mod hash;
pub mod nar;
pub mod nar_file;
pub mod narinfo;
pub mod nixbase32;
pub mod store_path;

pub use compression::Compression;
pub use dialect::Dialect;
pub use error::Error;
pub use hash::NarHash;
pub use nar_file::NarFile;
pub use narinfo::NarInfo;
pub use store_path::{StorePath, StorePathHash};

//! The NAR archive format (protocol.md §2): token constants shared by the writer in
//! store-reader and the parser here.

/// The magic string every NAR starts with.
pub const MAGIC: &[u8] = b"nix-archive-1";

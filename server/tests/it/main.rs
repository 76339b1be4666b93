//! In-process tests of the `subserve` library: the server on `127.0.0.1:0`, driven by raw
//! sockets, for what needs no store and no real client; and the repository's own references
//! (`doc_references`).

mod admin;
mod conn;
mod doc_references;

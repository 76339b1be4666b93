//! In-process tests of the `subserve` library: the server on `127.0.0.1:0`, driven by raw
//! sockets, for what needs no store and no real client.

mod admin;
mod conn;

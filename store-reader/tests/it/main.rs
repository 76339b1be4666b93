//! store-reader's integration tests: the NAR writer and listing against the NAR parser on random
//! trees, and against the real `nix-store` on a fixture with every kind of file.

mod db;
mod nix_store;
mod round_trip;
mod tree;

//! Integration tests of the fake provider: real HTTP, TCP and TLS on 127.0.0.1.

mod binary;
mod client;
mod graph;
mod idp;
mod smtp;

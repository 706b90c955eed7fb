//! Async tests of the client against a scripted local server over real TCP and TLS.

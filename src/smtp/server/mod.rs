//! The relay listener: legacy apps submit with AUTH PLAIN/LOGIN.

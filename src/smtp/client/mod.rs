//! Upstream SMTP client: delivery to the provider with STARTTLS/implicit TLS and XOAUTH2.

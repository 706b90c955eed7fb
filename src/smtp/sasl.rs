//! SASL codecs: XOAUTH2 and OAUTHBEARER initial responses.

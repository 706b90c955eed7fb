//! Device authorization grant (RFC 8628): pending codes, approval, polling outcomes.

use std::collections::HashMap;

use rand::Rng as _;

use super::error::OAuthError;
use crate::util::{now_unix, random_b64};

/// Where a device code stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Waiting for the user: polls get `authorization_pending`.
    Pending,
    /// Approved as this user: the next poll gets tokens.
    Approved(String),
    /// Declined: polls get `access_denied`.
    Denied,
    /// Expired (by time or by the test): polls get `expired_token`.
    Expired,
    /// Tokens were issued; the code cannot be used again.
    Redeemed,
}

/// One device authorization.
#[derive(Debug, Clone)]
pub(crate) struct DeviceGrant {
    pub user_code: String,
    pub client_id: String,
    pub scope: String,
    pub tid: String,
    pub status: DeviceStatus,
    pub pending_polls: u32,
    pub expires_at: u64,
}

/// Device codes by `device_code`, plus injected `slow_down` answers.
#[derive(Debug, Default)]
pub(crate) struct Devices {
    pub grants: HashMap<String, DeviceGrant>,
    pub slow_downs: u32,
}

/// What a poll with a device code yields.
#[derive(Debug)]
pub(crate) enum Poll {
    /// Issue tokens to this user for this grant.
    Issue { user: String, grant: DeviceGrant },
    /// Answer with this error.
    Refuse(OAuthError),
}

impl Devices {
    /// Register a new device authorization; returns (device_code, user_code).
    pub fn start(
        &mut self,
        client_id: &str,
        scope: &str,
        tid: &str,
        lifetime: u64,
    ) -> (String, String) {
        let device_code = format!("DAQABAAEAAAD{}", random_b64(96));
        // Microsoft user codes are 9 characters of A-Z/0-9.
        const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::thread_rng();
        let user_code: String = (0..9)
            .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
            .collect();
        self.grants.insert(
            device_code.clone(),
            DeviceGrant {
                user_code: user_code.clone(),
                client_id: client_id.to_owned(),
                scope: scope.to_owned(),
                tid: tid.to_owned(),
                status: DeviceStatus::Pending,
                pending_polls: 0,
                expires_at: now_unix().saturating_add(lifetime),
            },
        );
        (device_code, user_code)
    }

    /// Change the status of the grant with this user code; false when there is none.
    pub fn set_status(&mut self, user_code: &str, status: DeviceStatus) -> bool {
        match self
            .grants
            .values_mut()
            .find(|g| g.user_code.eq_ignore_ascii_case(user_code))
        {
            Some(g) => {
                g.status = status;
                true
            }
            None => false,
        }
    }

    /// Answer one poll of the token endpoint.
    pub fn poll(
        &mut self,
        device_code: &str,
        client_id: &str,
        auto_approve: Option<(u32, &str)>,
    ) -> Poll {
        let Some(g) = self.grants.get_mut(device_code) else {
            return Poll::Refuse(OAuthError::grant(
                70000,
                "AADSTS70000: The provided value for the 'device_code' is not valid.",
            ));
        };
        if g.client_id != client_id {
            return Poll::Refuse(OAuthError::grant(
                70000,
                "AADSTS70000: The device code was issued to a different client.",
            ));
        }
        if g.status == DeviceStatus::Pending && now_unix() >= g.expires_at {
            g.status = DeviceStatus::Expired;
        }
        if g.status == DeviceStatus::Pending
            && let Some((after, user)) = auto_approve
            && g.pending_polls >= after
        {
            g.status = DeviceStatus::Approved(user.to_owned());
        }
        match g.status.clone() {
            DeviceStatus::Pending => {
                g.pending_polls += 1;
                if self.slow_downs > 0 {
                    self.slow_downs -= 1;
                    return Poll::Refuse(OAuthError::new(
                        400,
                        "slow_down",
                        70016,
                        "AADSTS70016: OAuth 2.0 device flow error. Polling too fast: slow down.",
                    ));
                }
                Poll::Refuse(OAuthError::new(
                    400,
                    "authorization_pending",
                    70016,
                    "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. \
                     Continue polling.",
                ))
            }
            DeviceStatus::Approved(user) => {
                g.status = DeviceStatus::Redeemed;
                Poll::Issue {
                    user,
                    grant: g.clone(),
                }
            }
            DeviceStatus::Denied => Poll::Refuse(OAuthError::new(
                400,
                "access_denied",
                70000,
                "AADSTS70000: The user declined the authorization request.",
            )),
            DeviceStatus::Expired => Poll::Refuse(OAuthError::new(
                400,
                "expired_token",
                70019,
                "AADSTS70019: Verification code expired.",
            )),
            DeviceStatus::Redeemed => Poll::Refuse(OAuthError::grant(
                54005,
                "AADSTS54005: The device code was already redeemed.",
            )),
        }
    }
}

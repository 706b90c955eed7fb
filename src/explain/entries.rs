//! The entries of the catalogue. Facts from /work/shared/PROTOCOL.md and the providers' documentation;
//! an entry is added only when its cause is certain (a wrong explanation is worse than none).

use super::{Entry, Key};

const REAUTHORIZE: &str = "Run `postern connection authorize {connection}` to sign in again.";

/// Every known error. Order matters only for [`super::lookup`] among text keys.
pub static ENTRIES: &[Entry] = &[
    // ---- Microsoft Entra (AADSTS) ----
    Entry {
        key: Key::Aadsts(&[50011, 500112, 500113]),
        cause: "The redirect URI is not registered on the app.",
        remedy: "In Entra: App registrations > your app > Authentication > Add a platform (Mobile and \
                 desktop applications), add exactly {redirect_uri} (for http://localhost Entra ignores the port).",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[7000215]),
        cause: "The client secret is wrong.",
        remedy: "Use the secret's Value (shown once when created), not its Secret ID; store it with \
                 `postern connection edit {connection} --client-secret-file FILE`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[7000222]),
        cause: "The client secret has expired (Azure client secrets last at most 24 months).",
        remedy: "Create a new secret under App registrations > Certificates & secrets, then \
                 `postern connection edit {connection} --client-secret-file FILE --secret-expires YYYY-MM-DD`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[7000218]),
        cause: "The app is a confidential client and no client secret is stored.",
        remedy: "Store one with `postern connection edit {connection} --client-secret-file FILE`, or enable \
                 'Allow public client flows' on the app.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[65001]),
        cause: "Consent is missing for the requested permissions.",
        remedy: "In Entra: API permissions > add the delegated permission SMTP.Send (Office 365 Exchange \
                 Online) and offline_access, then 'Grant admin consent'.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[65004]),
        cause: "The user declined consent.",
        remedy: "Run `postern connection authorize {connection}` and accept the consent screen.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[50076, 50079]),
        cause: "Multi-factor authentication is required for this sign-in.",
        remedy: "Run `postern connection authorize {connection}` interactively and complete MFA.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[50126]),
        cause: "The user name or password was not accepted at sign-in.",
        remedy: "Run `postern connection authorize {connection}` and sign in as the mailbox with its \
                 current password.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[53003]),
        cause: "A Conditional Access policy blocked the sign-in.",
        remedy: "Ask the tenant admin to allow this app, location or device in Conditional Access, then \
                 run `postern connection authorize {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[70000, 70008, 700082, 50173, 54005, 9002313]),
        cause: "The stored refresh token (or code) is no longer valid: expired after 90 idle days, \
                revoked, or invalidated by a password change.",
        remedy: REAUTHORIZE,
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[700016]),
        cause: "The application (client) id is not known in this tenant.",
        remedy: "Check --client-id and --tenant with `postern connection edit {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[90002, 900023]),
        cause: "The tenant is not known.",
        remedy: "Check --tenant (a GUID, a verified domain, or common/organizations/consumers) with \
                 `postern connection edit {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[50059]),
        cause: "Client credentials need a specific tenant, not common/organizations.",
        remedy: "Set the tenant's GUID or domain: `postern connection edit {connection} --tenant ...`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[500011]),
        cause: "The resource named in the scope was not found in the tenant (the Exchange Online \
                service principal is missing, or the scope names the wrong resource).",
        remedy: "Check the scope with `postern connection show {connection}` \
                 (`https://outlook.office.com/SMTP.Send offline_access`) and that the tenant has Exchange Online.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[1002012]),
        cause: "App-only (client credentials) tokens need a `.default` scope.",
        remedy: "Use `https://outlook.office365.com/.default` (GCC High/DoD: \
                 `https://outlook.office365.us/.default`; 21Vianet: `https://partner.outlook.cn/.default`) \
                 with `postern connection edit {connection} --scope ...`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Aadsts(&[28000]),
        cause: "The scope mixes two resources (e.g. Graph and Outlook).",
        remedy: "Use only `https://outlook.office.com/SMTP.Send offline_access` (GCC High/DoD: \
                 `https://outlook.office365.us/SMTP.Send offline_access`; 21Vianet: \
                 `https://partner.outlook.cn/SMTP.Send offline_access`).",
        needs_admin: true,
    },
    // ---- SMTP replies ----
    Entry {
        key: Key::SmtpText("SubmissionQuotaExceeded"),
        cause: "The mailbox reached its sending limit (Exchange Online: 10,000 recipients per day, \
                30 messages per minute).",
        remedy: "Wait for the quota to recover (about 24 hours), or spread the load over several mailboxes.",
        needs_admin: false,
    },
    Entry {
        key: Key::SmtpText("SendAsDenied"),
        cause: "The From address is not the authenticated mailbox, and that mailbox has no SendAs right on it.",
        remedy: "Send as the mailbox itself, or grant the right in Exchange: \
                 `Add-RecipientPermission -Identity <from address> -Trustee <mailbox> -AccessRights SendAs`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(554, (5, 2, 252)),
        cause: "The From address is not the authenticated mailbox, and that mailbox has no SendAs right on it.",
        remedy: "Send as the mailbox itself, or grant the right in Exchange: \
                 `Add-RecipientPermission -Identity <from address> -Trustee <mailbox> -AccessRights SendAs`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(535, (5, 7, 139)),
        cause: "SMTP AUTH is disabled for this mailbox or tenant (535 5.7.139); a new token will not help.",
        remedy: "Enable it for the mailbox with \
                 `Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled $false` (or tenant-wide \
                 with `Set-TransportConfig -SmtpClientAuthenticationDisabled $false`), and make sure Entra ID \
                 security defaults are off, since they disable SMTP AUTH.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(535, (5, 7, 3)),
        cause: "The server rejected the access token even after a refresh.",
        remedy: "Check that the connection's scope is https://outlook.office.com/SMTP.Send (GCC High/DoD: \
                 https://outlook.office365.us/SMTP.Send; 21Vianet: https://partner.outlook.cn/SMTP.Send; a \
                 Microsoft Graph token is refused by SMTP with 535 5.7.3; for Gmail: https://mail.google.com/), \
                 that the user name is the mailbox that consented, then re-authorize the connection.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(535, (5, 7, 8)),
        cause: "The server did not accept the credentials (Gmail: the token is not valid for this user).",
        remedy: "Check that the user name is the account that consented and the scope is \
                 https://mail.google.com/, then run `postern connection authorize {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(530, (5, 7, 57)),
        cause: "The server says the client is not authenticated at MAIL FROM (530 5.7.57).",
        remedy: "AUTH did not happen or did not succeed on this connection: run \
                 `postern connection test {connection} --to EMAIL` to see the AUTH step.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(530, (5, 5, 1)),
        cause: "The server requires authentication before this command (Gmail 530 5.5.1).",
        remedy: "AUTH did not happen or did not succeed: run `postern connection test {connection} --to EMAIL`.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(550, (5, 7, 60)),
        cause: "The mailbox has no permission to send as this sender (550 5.7.60).",
        remedy: "Send as the mailbox itself, or grant it SendAs on the From address in Exchange.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(550, (5, 7, 30)),
        cause: "The server refuses basic authentication (550 5.7.30).",
        remedy: "This connection must authenticate with OAuth (XOAUTH2): check its host is the provider's.",
        needs_admin: true,
    },
    Entry {
        key: Key::Smtp(432, (4, 3, 2)),
        cause: "Too many simultaneous connections for this mailbox (Exchange Online allows 3 per mailbox).",
        remedy: "Postern will back off; lower this connection's concurrency.",
        needs_admin: false,
    },
    Entry {
        key: Key::Smtp(0, (4, 7, 0)),
        cause: "The provider refused for now (Gmail 421/454 4.7.0: too many logins or messages; \
                Exchange 451 4.7.0: a temporary server error).",
        remedy: "Postern retries later; if it persists, lower the sending rate or check the provider's status page.",
        needs_admin: false,
    },
    // ---- OAuth `error` values (Google, generic, Microsoft without a known code) ----
    Entry {
        key: Key::OAuth("access_denied"),
        cause: "The sign-in was declined.",
        remedy: "Run `postern connection authorize {connection}` and accept the consent screen.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("authorization_declined"),
        cause: "The sign-in was declined.",
        remedy: "Run `postern connection authorize {connection}` and accept the consent screen.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("expired_token"),
        cause: "The code expired before the sign-in finished.",
        remedy: REAUTHORIZE,
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("invalid_grant"),
        cause: "The refresh token or code was refused (expired, revoked, or the password changed; Google \
                apps in 'Testing' status lose their refresh tokens after 7 days).",
        remedy: REAUTHORIZE,
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("invalid_client"),
        cause: "The provider does not accept the client id or secret.",
        remedy: "Check them with `postern connection show {connection}` and fix them with \
                 `postern connection edit {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("unauthorized_client"),
        cause: "The client is not allowed to use this grant type or scope.",
        remedy: "Check the app's type and allowed flows at the provider, and the connection's --flow with \
                 `postern connection show {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("admin_policy_enforced"),
        cause: "The Google Workspace admin's policy blocks this app for the account.",
        remedy: "Ask the Workspace admin to trust the app (Security > API controls > App access control), \
                 then run `postern connection authorize {connection}`.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("org_internal"),
        cause: "The Google app is 'Internal' and the account is outside its organization.",
        remedy: "Sign in with an account of the app's organization, or make the app external.",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("invalid_scope"),
        cause: "The provider refused the scope.",
        remedy: "Check it with `postern connection show {connection}` (Gmail: https://mail.google.com/; \
                 the device flow cannot request it).",
        needs_admin: true,
    },
    Entry {
        key: Key::OAuth("redirect_uri_mismatch"),
        cause: "The redirect URI is not registered on the app.",
        remedy: "Register {redirect_uri} (Google: Credentials > OAuth client > Authorized redirect URIs).",
        needs_admin: true,
    },
    // ---- Google causes Postern diagnoses itself (see `diagnose_refusal`) ----
    Entry {
        key: Key::Postern(super::GOOGLE_TESTING_PHRASE),
        cause: "Google refused a refresh token about 7 days after it was issued: apps whose publishing \
                status is 'Testing' get refresh tokens that expire after 7 days.",
        remedy: "Publish the app: Google Cloud console > Google Auth Platform > Audience (older consoles: \
                 APIs & Services > OAuth consent screen) > Publishing status > 'Publish app' (In \
                 production; the https://mail.google.com/ scope may then need Google's verification, \
                 or use an 'Internal' app in Google Workspace). Then run \
                 `postern connection authorize {connection}` once more.",
        needs_admin: true,
    },
    Entry {
        key: Key::Postern(super::DELEGATION_PHRASE),
        cause: "Google refused the service account's assertion: the Workspace has not granted \
                domain-wide delegation to this client id for https://mail.google.com/ (or the grant \
                names another scope).",
        remedy: "In the Google Workspace Admin console: Security > Access and data control > API controls > \
                 Manage Domain Wide Delegation > Add new: the service account's Client ID (`postern \
                 connection show {connection}`) and the scope https://mail.google.com/ exactly. It can \
                 take a few minutes (up to 24 hours) to apply; then `postern connection authorize {connection}`.",
        needs_admin: true,
    },
    // ---- Microsoft Graph error codes ----
    Entry {
        key: Key::Graph("ErrorSendAsDenied"),
        cause: "The mailbox has no right to send as the From address.",
        remedy: "Send as the connection's mailbox (or through `--from-policy rewrite`), or give the \
                 mailbox SendAs rights on the From address in Exchange (Exchange admin center > \
                 Recipients > the From mailbox > Delegation > Send as); a shared mailbox also needs the \
                 delegated Mail.Send.Shared permission.",
        needs_admin: true,
    },
    Entry {
        key: Key::Graph("ErrorAccessDenied"),
        cause: "Graph refused access to the mailbox (\"Access to OData is disabled\", or a missing \
                Mail.Send permission or RBAC for Applications scope).",
        remedy: "In Entra: API permissions > Microsoft Graph > Mail.Send (delegated, or application for \
                 app-only) > Grant admin consent, then `postern connection authorize {connection}`. For \
                 app-only, an RBAC for Applications scope (New-ManagementRoleAssignment -Role \
                 \"Application Mail.Send\" with a management scope) or an application access policy must \
                 include this mailbox.",
        needs_admin: true,
    },
    Entry {
        key: Key::Graph("MailboxNotEnabledForRESTAPI"),
        cause: "The mailbox cannot be reached through Graph (on-premises, inactive or unlicensed).",
        remedy: "Give the mailbox an Exchange Online license (or use a cloud mailbox that has one), or \
                 send through SMTP (`postern connection edit {connection} --transport smtp`).",
        needs_admin: true,
    },
    Entry {
        key: Key::Graph("ErrorInvalidRecipients"),
        cause: "Graph found no valid recipient in the message headers (envelope-only recipients need a Bcc header).",
        remedy: "Check the recipients' addresses: Graph refuses the whole message when one is not \
                 a valid address.",
        needs_admin: false,
    },
    Entry {
        key: Key::Graph("ErrorMessageSizeExceeded"),
        cause: "The message is larger than the mailbox accepts.",
        remedy: "Send a smaller message (Graph requests are limited to 4 MB).",
        needs_admin: false,
    },
    Entry {
        key: Key::Graph("RequestEntityTooLarge"),
        cause: "The Graph request is larger than 4 MB (the message is sent base64-encoded, a third larger).",
        remedy: "Send messages under about 3 MB through this connection, or use the SMTP transport for \
                 large mail (Exchange Online takes up to 35 MB over SMTP).",
        needs_admin: false,
    },
    Entry {
        key: Key::Graph("ApplicationThrottled"),
        cause: "Graph is throttling the app (too many requests).",
        remedy: "Postern backs off as Retry-After asks; lower the sending rate if it persists.",
        needs_admin: false,
    },
    Entry {
        key: Key::Graph("InvalidAuthenticationToken"),
        cause: "Graph refused the token (wrong audience or expired).",
        remedy: "Check the scope is a Graph scope (`https://graph.microsoft.com/Mail.Send offline_access`), \
                 then run `postern connection authorize {connection}`.",
        needs_admin: true,
    },
];

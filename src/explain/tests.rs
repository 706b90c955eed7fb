//! Every entry is found from a realistic raw error, and every entry has such a case.

use super::*;

/// (raw error as a provider or Postern's log writes it, the label of the entry it must find)
const CASES: &[(&str, &str)] = &[
    (
        "invalid_grant: Token has been expired or revoked. The refresh token was 7.0 days old: the Google app is probably in 'Testing' publishing status.",
        "the Google app is probably in 'Testing' publishing status",
    ),
    (
        "unauthorized_client: Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested. For a service account this means domain-wide delegation is not granted for its client id and scope.",
        "domain-wide delegation is not granted",
    ),
    (
        "invalid_request: AADSTS50011: The redirect URI 'http://localhost:5' specified in the request does not match",
        "AADSTS50011",
    ),
    (
        "invalid_request: AADSTS500113: No reply address is registered for the application.",
        "AADSTS50011",
    ),
    (
        "invalid_client: AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID",
        "AADSTS7000215",
    ),
    (
        "invalid_client: AADSTS7000222: The provided client secret keys for app '1b2c' are expired. Visit the Azure portal to create new keys for your app",
        "AADSTS7000222",
    ),
    (
        "invalid_client: AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        "AADSTS7000218",
    ),
    (
        "invalid_grant: AADSTS65001: The user or administrator has not consented to use the application",
        "AADSTS65001",
    ),
    (
        "access_denied: AADSTS65004: User declined to consent to access the app.",
        "access_denied",
    ),
    (
        "invalid_grant: AADSTS65004: User declined to consent to access the app.",
        "AADSTS65004",
    ),
    (
        "invalid_grant: AADSTS50076: Due to a configuration change made by your administrator, or because you moved to a new location, you must use multi-factor authentication",
        "AADSTS50076",
    ),
    (
        "invalid_grant: AADSTS50126: Error validating credentials due to invalid username or password.",
        "AADSTS50126",
    ),
    (
        "invalid_grant: AADSTS53003: Access has been blocked by Conditional Access policies.",
        "AADSTS53003",
    ),
    (
        "invalid_grant: AADSTS70000: The request was denied because one or more scopes requested are unauthorized or expired.",
        "AADSTS70000",
    ),
    (
        "invalid_grant: AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.",
        "AADSTS70000",
    ),
    (
        "invalid_grant: AADSTS700082: The refresh token has expired due to inactivity.",
        "AADSTS70000",
    ),
    (
        "invalid_grant: AADSTS9002313: Invalid request. Request is malformed or invalid.",
        "AADSTS70000",
    ),
    (
        "unauthorized_client: AADSTS700016: Application with identifier '1b2c' was not found in the directory 'Contoso'.",
        "AADSTS700016",
    ),
    (
        "invalid_request: AADSTS90002: Tenant 'contoso.example' not found.",
        "AADSTS90002",
    ),
    (
        "invalid_request: AADSTS50059: No tenant-identifying information found in either the request or implied by any provided credentials.",
        "AADSTS50059",
    ),
    (
        "invalid_resource: AADSTS500011: The resource principal named https://outlook.office.com was not found in the tenant named Contoso.",
        "AADSTS500011",
    ),
    (
        "invalid_scope: AADSTS1002012: The provided value for scope SMTP.Send is not valid. Client credential flows must have a scope value with /.default suffixed",
        "AADSTS1002012",
    ),
    (
        "invalid_scope: AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than one resource.",
        "AADSTS28000",
    ),
    (
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message",
        "SubmissionQuotaExceeded",
    ),
    (
        "554 5.2.0 STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; Failed to process message",
        "SendAsDenied",
    ),
    (
        "554 5.2.252 not allowed to send as b@example.com",
        "554 5.2.252",
    ),
    (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.",
        "535 5.7.139",
    ),
    (
        "rejected at AUTH: 535 5.7.3 Authentication unsuccessful [AM0PR01CA0001.eurprd01.prod.exchangelabs.com]",
        "535 5.7.3",
    ),
    (
        "535-5.7.8 Username and Password not accepted. For more information, go to",
        "535 5.7.8",
    ),
    (
        "530 5.7.57 Client not authenticated to send mail. Error: 535 5.7.139",
        "530 5.7.57",
    ),
    (
        "530-5.5.1 Authentication Required. Learn more at",
        "530 5.5.1",
    ),
    (
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        "550 5.7.60",
    ),
    (
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "550 5.7.30",
    ),
    (
        "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded",
        "432 4.3.2",
    ),
    ("421 4.7.0 Try again later, closing connection.", "4.7.0"),
    (
        "authorization_declined: the user declined",
        "authorization_declined",
    ),
    (
        "expired_token: AADSTS70020: The provided value for the input parameter 'device_code' is not valid.",
        "expired_token",
    ),
    (
        "invalid_grant: Token has been expired or revoked.",
        "invalid_grant",
    ),
    (
        "invalid_client: The OAuth client was not found.",
        "invalid_client",
    ),
    (
        "unauthorized_client: Client is unauthorized to retrieve access tokens using this method.",
        "unauthorized_client",
    ),
    (
        "admin_policy_enforced: Access blocked: your administrator has blocked this app",
        "admin_policy_enforced",
    ),
    (
        "org_internal: This client is restricted to users within its organization.",
        "org_internal",
    ),
    (
        "invalid_scope: Some requested scopes were invalid.",
        "invalid_scope",
    ),
    (
        "redirect_uri_mismatch: Bad Request",
        "redirect_uri_mismatch",
    ),
    (
        "HTTP 403: {\"error\":{\"code\":\"ErrorSendAsDenied\",\"message\":\"The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.\"}}",
        "ErrorSendAsDenied",
    ),
    (
        "HTTP 403: {\"error\":{\"code\":\"ErrorAccessDenied\",\"message\":\"Access to OData is disabled.\"}}",
        "ErrorAccessDenied",
    ),
    (
        "HTTP 404: {\"error\":{\"code\":\"MailboxNotEnabledForRESTAPI\",\"message\":\"The mailbox is either inactive, soft-deleted, or is hosted on-premise.\"}}",
        "MailboxNotEnabledForRESTAPI",
    ),
    (
        "HTTP 400: {\"error\":{\"code\":\"ErrorInvalidRecipients\",\"message\":\"At least one recipient is not valid.\"}}",
        "ErrorInvalidRecipients",
    ),
    (
        "HTTP 413: {\"error\":{\"code\":\"ErrorMessageSizeExceeded\",\"message\":\"The message exceeds the maximum supported size.\"}}",
        "ErrorMessageSizeExceeded",
    ),
    (
        "HTTP 413: {\"error\":{\"code\":\"RequestEntityTooLarge\",\"message\":\"The request exceeds the maximum size.\"}}",
        "RequestEntityTooLarge",
    ),
    (
        "HTTP 429: {\"error\":{\"code\":\"ApplicationThrottled\",\"message\":\"Application is over its MailboxConcurrency limit.\"}}",
        "ApplicationThrottled",
    ),
    (
        "HTTP 401: {\"error\":{\"code\":\"InvalidAuthenticationToken\",\"message\":\"Access token validation failure. Invalid audience.\"}}",
        "InvalidAuthenticationToken",
    ),
];

#[test]
fn each_case_finds_its_entry() {
    for (raw, label) in CASES {
        let found = lookup(raw).unwrap_or_else(|| panic!("nothing found for {raw}"));
        assert_eq!(found.label(), *label, "{raw}");
    }
}

#[test]
fn every_entry_has_a_case() {
    for entry in ENTRIES {
        let label = entry.label();
        assert!(
            CASES.iter().any(|(_, l)| *l == label),
            "no test case finds {label}"
        );
        assert!(
            !entry.cause.is_empty() && !entry.remedy.is_empty(),
            "{label}"
        );
    }
}

#[test]
fn unknown_errors_have_no_entry() {
    for raw in [
        "550 5.1.1 User unknown",
        "weird: something",
        "AADSTS1: unknown code and no error word",
        "the host name does not resolve",
        "",
    ] {
        assert!(
            lookup(raw).is_none(),
            "{raw}: {:?}",
            lookup(raw).map(Entry::label)
        );
    }
}

#[test]
fn an_unknown_aadsts_code_falls_back_to_the_error_word() {
    assert_eq!(
        lookup("invalid_grant: AADSTS1: something").map(Entry::label),
        Some("invalid_grant".into())
    );
}

#[test]
fn remedies_name_the_connection_and_the_redirect_uri() {
    let cx = Context {
        connection: Some("contoso"),
        redirect_uri: Some("http://localhost:53123"),
    };
    let text = aadsts(50011).unwrap().explain(cx);
    assert!(text.contains("`http://localhost:53123`"), "{text}");
    let text = aadsts(70008).unwrap().explain(cx);
    assert!(
        text.contains("postern connection authorize contoso"),
        "{text}"
    );
    let text = aadsts(50011).unwrap().explain(Context::default());
    assert!(text.contains("postern connection show NAME"), "{text}");
    assert!(!aadsts(7000222).unwrap().explain(cx).contains('{'));
}

#[test]
fn smtp_text_markers_win_over_codes() {
    let e = smtp(
        554,
        Some((5, 2, 0)),
        "STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
    )
    .unwrap();
    assert!(e.cause.contains("10,000") && !e.needs_admin);
    assert!(smtp(550, Some((5, 1, 1)), "User unknown").is_none());
    assert_eq!(
        graph("errorsendasdenied").map(Entry::label),
        Some("ErrorSendAsDenied".into())
    );
    assert_eq!(
        oauth_error("invalid_grant").map(|e| e.needs_admin),
        Some(true)
    );
}

#[test]
fn google_refusals_are_diagnosed_from_the_token_age_and_the_flow() {
    use crate::domain::{OAuthFlow, Provider};
    let day = 86_400;
    let testing = |age: Option<i64>| {
        diagnose_refusal(
            Provider::Google,
            OAuthFlow::AuthorizationCode,
            "invalid_grant",
            age,
        )
    };
    for age in [13 * day / 2, 7 * day, 7 * day + 3600, 15 * day / 2] {
        let note = testing(Some(age)).expect("about 7 days");
        let entry = lookup(&format!(
            "invalid_grant: Token has been expired or revoked. {note}"
        ))
        .unwrap();
        assert!(entry.remedy.contains("Publish app"), "{}", entry.remedy);
    }
    for age in [None, Some(6 * day), Some(8 * day), Some(3600)] {
        assert_eq!(testing(age), None, "{age:?}");
    }
    // Only Google's delegated refresh tokens die at 7 days.
    assert_eq!(
        diagnose_refusal(
            Provider::Microsoft,
            OAuthFlow::AuthorizationCode,
            "invalid_grant",
            Some(7 * day)
        ),
        None
    );
    let note = diagnose_refusal(
        Provider::Google,
        OAuthFlow::ServiceAccount,
        "unauthorized_client",
        None,
    )
    .unwrap();
    let entry = lookup(&note).unwrap();
    assert!(entry.remedy.contains("Manage Domain Wide Delegation"));
    assert!(entry.remedy.contains("https://mail.google.com/"));
    assert_eq!(
        consent_warning(Provider::Google, OAuthFlow::AuthorizationCode),
        Some(GOOGLE_TESTING_STATUS_WARNING)
    );
    assert_eq!(
        consent_warning(Provider::Google, OAuthFlow::ServiceAccount),
        None
    );
    assert_eq!(
        consent_warning(Provider::Microsoft, OAuthFlow::AuthorizationCode),
        None
    );
}

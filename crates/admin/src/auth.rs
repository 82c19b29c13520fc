//! Bearer tokens and roles. With no tokens file every caller is an editor
//! called "anonymous" (and `expd` then binds only to loopback); with one,
//! every call but health and reflection needs `authorization: Bearer
//! <token>`, and the token's role says what it may do:
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read: Get, List, Validate, revisions, overrides, results |
//! | `editor` | what a viewer may, and every change |
//! | `data_plane` | what services and SDKs do: `Assign`, `WatchConfigs`, `GetConfigSnapshot`, `LogExposures`, `LogOutcomes`; nothing else |
//!
//! The tokens file is JSON:
//!
//! ```json
//! {"tokens": [
//!   {"token": "pm-7d9f2c41e8a64b0f", "identity": "alice@example.com", "role": "editor"},
//!   {"token": "an-3b1e9d7c5a2f4e60", "identity": "bob@example.com", "role": "viewer"},
//!   {"token": "rs-9c0d5e1f7a3b2c84", "identity": "rec-service", "role": "data_plane"}
//! ]}
//! ```
//!
//! Tokens are 16 to 256 printable ASCII characters (what an HTTP header
//! or gRPC metadata can carry), compared in constant time.

use std::{collections::HashSet, path::Path};

use exp_core::{Error, FieldViolation};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tonic::metadata::MetadataMap;

/// Shortest token accepted in a tokens file.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest token accepted in a tokens file.
pub const MAX_TOKEN_LEN: usize = 256;

/// Who a caller is, by its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: Get, List, Validate, ListExperimentRevisions, ListOverrides,
    /// results.
    Viewer,
    /// Everything a viewer may, and every change.
    Editor,
    /// A service or SDK: assignment, config delivery, events.
    DataPlane,
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading experiments, revisions, overrides, results.
    Read,
    /// Changing them.
    Change,
    /// Assignment, config delivery, events.
    DataPlane,
}

impl Role {
    /// Whether this role may make a call that needs `access`.
    pub fn may(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::Viewer, Access::Read)
                | (Self::Editor, Access::Read | Access::Change)
                | (Self::DataPlane, Access::DataPlane)
        )
    }

    /// The role's name in the tokens file.
    pub fn name(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Editor => "editor",
            Self::DataPlane => "data_plane",
        }
    }
}

impl Access {
    fn needs(self) -> &'static str {
        match self {
            Self::Read => "a viewer or editor token",
            Self::Change => "an editor token",
            Self::DataPlane => "a data_plane token",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Recorded as `updated_by` on what the caller changes.
    pub identity: String,
    /// What the caller may do.
    pub role: Role,
}

impl Principal {
    /// The principal of automatic changes made by the server itself.
    pub fn system(identity: &str) -> Self {
        Self {
            identity: identity.to_owned(),
            role: Role::Editor,
        }
    }
}

/// Checks callers against the configured tokens.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    // `None`: no tokens configured, every caller is an anonymous editor.
    // A list, not a map: a lookup compares the offered token with every
    // one, in constant time, so its timing tells nothing of them.
    tokens: Option<Vec<(Vec<u8>, Principal)>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    identity: String,
    role: Role,
}

impl Authenticator {
    /// No tokens: everyone is an editor called "anonymous".
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// Reads a tokens file; problems name the file and the entry.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let metadata = std::fs::metadata(path)
            .map_err(|err| format!("--tokens-file {}: {err}", path.display()))?;
        check_private(&metadata)
            .map_err(|problem| format!("--tokens-file {}: {problem}", path.display()))?;
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("--tokens-file {}: {err}", path.display()))?;
        Self::from_json(&text).map_err(|violations| {
            let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
            format!("--tokens-file {}: {}", path.display(), listed.join("; "))
        })
    }

    /// Parses a tokens file's text.
    pub fn from_json(text: &str) -> Result<Self, Vec<FieldViolation>> {
        let file: TokensFile = serde_json::from_str(text)
            .map_err(|err| vec![FieldViolation::new("tokens", err.to_string())])?;
        let mut violations = Vec::new();
        let mut tokens = Vec::new();
        let mut seen = HashSet::new();
        if file.tokens.is_empty() {
            violations.push(FieldViolation::new(
                "tokens",
                "must list at least one token",
            ));
        }
        for (index, entry) in file.tokens.into_iter().enumerate() {
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&entry.token.len())
                || !entry.token.bytes().all(|byte| byte.is_ascii_graphic())
            {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].token"),
                    format!(
                        "must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} printable ASCII characters \
                         without spaces (what an authorization header can carry)"
                    ),
                ));
            }
            if entry.identity.trim().is_empty() {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].identity"),
                    "is required",
                ));
            }
            if !seen.insert(entry.token.clone()) {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].token"),
                    "repeats an earlier token",
                ));
            }
            tokens.push((
                entry.token.into_bytes(),
                Principal {
                    identity: entry.identity,
                    role: entry.role,
                },
            ));
        }
        if violations.is_empty() {
            Ok(Self {
                tokens: Some(tokens),
            })
        } else {
            Err(violations)
        }
    }

    /// Whether tokens are configured (and so checked).
    pub fn is_enforcing(&self) -> bool {
        self.tokens.is_some()
    }

    /// The caller behind `metadata` (gRPC), if it may make a call that
    /// needs `access`; `method` names the call in the refusal.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        access: Access,
        method: &str,
    ) -> Result<Principal, Error> {
        let header = match metadata.get("authorization") {
            None => None,
            Some(value) => Some(value.to_str().map_err(|_| {
                Error::Unauthenticated("the authorization metadata is not text".into())
            })?),
        };
        self.authorize_header(header, access, method)
    }

    /// The caller behind an `authorization` header value (HTTP, or gRPC
    /// metadata), if it may make a call that needs `access`.
    pub fn authorize_header(
        &self,
        header: Option<&str>,
        access: Access,
        method: &str,
    ) -> Result<Principal, Error> {
        let Some(tokens) = &self.tokens else {
            return Ok(Principal {
                identity: "anonymous".to_owned(),
                role: Role::Editor,
            });
        };
        let header = header.ok_or_else(|| {
            Error::Unauthenticated(format!(
                "{method} needs a token: send `authorization: Bearer <token>`"
            ))
        })?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be `Bearer <token>`".into())
            })?;
        let mut found: Option<&Principal> = None;
        for (known, principal) in tokens {
            // Every token is compared, whatever matched before.
            if bool::from(known.as_slice().ct_eq(token.as_bytes())) {
                found = Some(principal);
            }
        }
        let principal = found.ok_or_else(|| Error::Unauthenticated("unknown token".into()))?;
        if !principal.role.may(access) {
            return Err(Error::PermissionDenied(format!(
                "{} has the {} role; {method} needs {}",
                principal.identity,
                principal.role.name(),
                access.needs()
            )));
        }
        Ok(principal.clone())
    }
}

/// A tokens file holds secrets: no other user may read it. Readable by
/// every user is refused; readable by a group only when that group is one
/// of this process's own (a Kubernetes secret mounted with `defaultMode:
/// 0440` and the pod's `fsGroup`).
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let mode = metadata.mode() & 0o777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "readable by every user (mode {mode:o}): tokens are secrets; \
             `chmod 600` it (or 640 for a group of this process)"
        ));
    }
    if mode & 0o040 != 0 && !own_groups().contains(&metadata.gid()) {
        return Err(format!(
            "readable by group {} (mode {mode:o}), which this process is not in: \
             `chmod 600` it, or give it this process's group",
            metadata.gid()
        ));
    }
    Ok(())
}

/// The groups of this process: effective, real and supplementary.
fn own_groups() -> Vec<u32> {
    let mut groups = vec![
        rustix::process::getegid().as_raw(),
        rustix::process::getgid().as_raw(),
    ];
    groups.extend(
        rustix::process::getgroups()
            .unwrap_or_default()
            .into_iter()
            .map(rustix::process::Gid::as_raw),
    );
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: &str = r#"{"tokens": [
        {"token": "editor-token-0123456789", "identity": "alice@example.com", "role": "editor"},
        {"token": "viewer-token-0123456789", "identity": "bob@example.com", "role": "viewer"},
        {"token": "data-plane-token-0123456", "identity": "rec-service", "role": "data_plane"}
    ]}"#;

    fn metadata(header: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", header.parse().expect("ascii"));
        metadata
    }

    #[test]
    fn without_tokens_everyone_is_an_anonymous_editor() {
        let principal = Authenticator::open()
            .authorize(&MetadataMap::new(), Access::Change, "CreateExperiment")
            .expect("allowed");
        assert_eq!(principal.identity, "anonymous");
    }

    #[test]
    fn editor_token_may_change_and_names_its_identity() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        let principal = auth
            .authorize(
                &metadata("Bearer editor-token-0123456789"),
                Access::Change,
                "UpdateExperiment",
            )
            .expect("allowed");
        assert_eq!(principal.identity, "alice@example.com");
    }

    #[test]
    fn viewer_token_may_read_but_not_change() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        let header = metadata("bearer viewer-token-0123456789");
        assert!(
            auth.authorize(&header, Access::Read, "GetExperiment")
                .is_ok()
        );
        let refused = auth.authorize(&header, Access::Change, "UpdateExperiment");
        assert!(
            matches!(refused, Err(Error::PermissionDenied(message)) if message.contains("UpdateExperiment"))
        );
    }

    #[test]
    fn missing_or_unknown_tokens_are_unauthenticated() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        assert!(matches!(
            auth.authorize(&MetadataMap::new(), Access::Read, "GetExperiment"),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(
                &metadata("Bearer nope-nope-nope-nope"),
                Access::Read,
                "GetExperiment"
            ),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(
                &metadata("Basic editor-token-0123456789"),
                Access::Read,
                "GetExperiment"
            ),
            Err(Error::Unauthenticated(_))
        ));
    }

    #[test]
    fn a_data_plane_token_may_assign_and_log_events_and_nothing_else() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        let data_plane = metadata("Bearer data-plane-token-0123456");
        assert!(
            auth.authorize(&data_plane, Access::DataPlane, "Assign")
                .is_ok()
        );
        for (access, method) in [
            (Access::Read, "GetExperiment"),
            (Access::Change, "UpdateExperiment"),
        ] {
            let refused = auth.authorize(&data_plane, access, method);
            assert!(
                matches!(&refused, Err(Error::PermissionDenied(message)) if message.contains("data_plane")),
                "{refused:?}"
            );
        }
        for people in [
            "Bearer editor-token-0123456789",
            "Bearer viewer-token-0123456789",
        ] {
            assert!(matches!(
                auth.authorize(&metadata(people), Access::DataPlane, "LogOutcomes"),
                Err(Error::PermissionDenied(_))
            ));
        }
    }

    #[test]
    fn a_token_that_differs_in_its_last_byte_or_its_length_is_unknown() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        for near in [
            "Bearer editor-token-0123456788",
            "Bearer editor-token-012345678",
            "Bearer editor-token-01234567890",
        ] {
            assert!(matches!(
                auth.authorize(&metadata(near), Access::Read, "GetExperiment"),
                Err(Error::Unauthenticated(_))
            ));
        }
    }

    #[test]
    fn tokens_must_be_printable_ascii_an_authorization_header_can_carry() {
        for token in ["é-not-ascii-0123456789", "tab\\tinside-0123456789"] {
            let violations = Authenticator::from_json(&format!(
                r#"{{"tokens": [{{"token": "{token}", "identity": "a", "role": "editor"}}]}}"#
            ))
            .expect_err("refused");
            assert_eq!(violations[0].field, "tokens[0].token", "{token:?}");
        }
        let long = "x".repeat(MAX_TOKEN_LEN + 1);
        assert!(
            Authenticator::from_json(&format!(
                r#"{{"tokens": [{{"token": "{long}", "identity": "a", "role": "editor"}}]}}"#
            ))
            .is_err()
        );
    }

    fn tokens_file(mode: u32) -> (tempfile::TempDir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens.json");
        std::fs::write(
            &path,
            r#"{"tokens": [{"token": "editor-token-7d9f2c41e8a64b0f", "identity": "a", "role": "editor"}]}"#,
        )
        .expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        (dir, path)
    }

    #[test]
    fn a_tokens_file_other_users_can_read_is_refused() {
        let (_dir, private) = tokens_file(0o600);
        Authenticator::from_file(&private).expect("owner only");
        let (_dir, own_group) = tokens_file(0o640);
        Authenticator::from_file(&own_group).expect("a group of this process");
        let (_dir, everyone) = tokens_file(0o644);
        let refused = Authenticator::from_file(&everyone).expect_err("world-readable");
        assert!(
            refused.contains("readable by every user (mode 644)"),
            "{refused}"
        );
    }

    #[test]
    fn a_tokens_file_readable_by_a_group_of_other_users_is_refused() {
        let (_dir, path) = tokens_file(0o640);
        // A group this process is not in: only root may give the file one.
        let foreign = (60_000..65_000)
            .find(|gid| !own_groups().contains(gid))
            .expect("a foreign group id");
        let given = std::process::Command::new("chgrp")
            .arg(foreign.to_string())
            .arg(&path)
            .status()
            .is_ok_and(|status| status.success());
        if given {
            let refused = Authenticator::from_file(&path).expect_err("a foreign group");
            assert!(
                refused.contains(&format!("readable by group {foreign}")),
                "{refused}"
            );
        } else {
            // Not root: this process cannot give a file a foreign group,
            // so neither can the file be refused for one.
            Authenticator::from_file(&path).expect("its own group");
        }
    }

    #[test]
    fn tokens_file_problems_name_the_entry() {
        let violations = Authenticator::from_json(
            r#"{"tokens": [{"token": "short", "identity": "", "role": "editor"}]}"#,
        )
        .expect_err("refused");
        let fields: Vec<_> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["tokens[0].token", "tokens[0].identity"]);
        assert!(
            Authenticator::from_json(
                r#"{"tokens": [{"token": "x", "identity": "a", "role": "admin"}]}"#
            )
            .is_err()
        );
    }
}

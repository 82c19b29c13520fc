//! Bearer tokens and roles. With no tokens file every caller is an editor
//! called "anonymous" (and `expd` then binds only to loopback); with one,
//! every admin call needs `authorization: Bearer <token>`.
//!
//! The tokens file is JSON:
//!
//! ```json
//! {"tokens": [
//!   {"token": "pm-7d9f2c41e8a64b0f", "identity": "alice@example.com", "role": "editor"},
//!   {"token": "an-3b1e9d7c5a2f4e60", "identity": "bob@example.com", "role": "viewer"}
//! ]}
//! ```

use std::{collections::HashMap, path::Path};

use exp_core::{Error, FieldViolation};
use serde::Deserialize;
use tonic::metadata::MetadataMap;

/// Shortest token accepted in a tokens file.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads: Get, List, Validate, ListExperimentRevisions, ListOverrides.
    Viewer,
    /// Everything a viewer may, and every change.
    Editor,
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
    tokens: Option<HashMap<String, Principal>>,
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
        let mut tokens = HashMap::new();
        if file.tokens.is_empty() {
            violations.push(FieldViolation::new(
                "tokens",
                "must list at least one token",
            ));
        }
        for (index, entry) in file.tokens.into_iter().enumerate() {
            if entry.token.len() < MIN_TOKEN_LEN || entry.token.chars().any(char::is_whitespace) {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].token"),
                    format!("must be at least {MIN_TOKEN_LEN} characters without spaces"),
                ));
            }
            if entry.identity.trim().is_empty() {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].identity"),
                    "is required",
                ));
            }
            let principal = Principal {
                identity: entry.identity,
                role: entry.role,
            };
            if tokens.insert(entry.token, principal).is_some() {
                violations.push(FieldViolation::new(
                    format!("tokens[{index}].token"),
                    "repeats an earlier token",
                ));
            }
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

    /// The caller behind `metadata`, if it may act with `needed`.
    /// `method` names the RPC in the refusal.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        needed: Role,
        method: &str,
    ) -> Result<Principal, Error> {
        let Some(tokens) = &self.tokens else {
            return Ok(Principal {
                identity: "anonymous".to_owned(),
                role: Role::Editor,
            });
        };
        let header = metadata
            .get("authorization")
            .ok_or_else(|| {
                Error::Unauthenticated(format!(
                    "{method} needs a token: send the metadata `authorization: Bearer <token>`"
                ))
            })?
            .to_str()
            .map_err(|_| Error::Unauthenticated("the authorization metadata is not text".into()))?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                Error::Unauthenticated("authorization must be `Bearer <token>`".into())
            })?;
        let principal = tokens
            .get(token)
            .ok_or_else(|| Error::Unauthenticated("unknown token".into()))?;
        if principal.role < needed {
            return Err(Error::PermissionDenied(format!(
                "{} has the viewer role; {method} needs the editor role",
                principal.identity
            )));
        }
        Ok(principal.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: &str = r#"{"tokens": [
        {"token": "editor-token-0123456789", "identity": "alice@example.com", "role": "editor"},
        {"token": "viewer-token-0123456789", "identity": "bob@example.com", "role": "viewer"}
    ]}"#;

    fn metadata(header: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", header.parse().expect("ascii"));
        metadata
    }

    #[test]
    fn without_tokens_everyone_is_an_anonymous_editor() {
        let principal = Authenticator::open()
            .authorize(&MetadataMap::new(), Role::Editor, "CreateExperiment")
            .expect("allowed");
        assert_eq!(principal.identity, "anonymous");
    }

    #[test]
    fn editor_token_may_change_and_names_its_identity() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        let principal = auth
            .authorize(
                &metadata("Bearer editor-token-0123456789"),
                Role::Editor,
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
            auth.authorize(&header, Role::Viewer, "GetExperiment")
                .is_ok()
        );
        let refused = auth.authorize(&header, Role::Editor, "UpdateExperiment");
        assert!(
            matches!(refused, Err(Error::PermissionDenied(message)) if message.contains("UpdateExperiment"))
        );
    }

    #[test]
    fn missing_or_unknown_tokens_are_unauthenticated() {
        let auth = Authenticator::from_json(TOKENS).expect("valid");
        assert!(matches!(
            auth.authorize(&MetadataMap::new(), Role::Viewer, "GetExperiment"),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(
                &metadata("Bearer nope-nope-nope-nope"),
                Role::Viewer,
                "GetExperiment"
            ),
            Err(Error::Unauthenticated(_))
        ));
        assert!(matches!(
            auth.authorize(
                &metadata("Basic editor-token-0123456789"),
                Role::Viewer,
                "GetExperiment"
            ),
            Err(Error::Unauthenticated(_))
        ));
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

//! The parameter schema: which recommender knobs a variant may set, of
//! which type and range. A built-in schema covers the knobs the rec service
//! reads today; `--param-schema FILE` replaces it with a JSON file of the
//! same shape as [`BUILTIN_SCHEMA_JSON`].

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::{FieldViolation, model::Params};

/// The built-in schema, in the file format `--param-schema` takes.
pub const BUILTIN_SCHEMA_JSON: &str = include_str!("builtin_param_schema.json");

/// A parsed parameter schema.
#[derive(Debug, Clone)]
pub struct ParamSchema {
    params: BTreeMap<String, ParamSpec>,
}

/// Type and range of one parameter.
#[derive(Debug, Clone)]
pub enum ParamSpec {
    /// A string, optionally matching a pattern.
    String {
        /// Anchored pattern the value must match, if any.
        pattern: Option<Regex>,
    },
    /// A number in `[min, max]`.
    Number {
        /// Smallest allowed value.
        min: Option<f64>,
        /// Largest allowed value.
        max: Option<f64>,
    },
    /// A whole number in `[min, max]`.
    Integer {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// `true` or `false`.
    Boolean,
    /// One of a fixed set of strings.
    Enum {
        /// Allowed values.
        values: Vec<String>,
    },
}

// === file format ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaFile {
    params: BTreeMap<String, SpecFile>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum SpecFile {
    String {
        pattern: Option<String>,
        #[serde(default)]
        #[allow(dead_code)]
        description: String,
    },
    Number {
        min: Option<f64>,
        max: Option<f64>,
        #[serde(default)]
        #[allow(dead_code)]
        description: String,
    },
    Integer {
        min: Option<i64>,
        max: Option<i64>,
        #[serde(default)]
        #[allow(dead_code)]
        description: String,
    },
    Boolean {
        #[serde(default)]
        #[allow(dead_code)]
        description: String,
    },
    Enum {
        values: Vec<String>,
        #[serde(default)]
        #[allow(dead_code)]
        description: String,
    },
}

// === impl ParamSchema ===

impl ParamSchema {
    /// The built-in schema for the recommender's knobs.
    pub fn builtin() -> Self {
        // The built-in file is part of the source and covered by tests.
        Self::from_json(BUILTIN_SCHEMA_JSON).unwrap_or_else(|violations| {
            panic!("built-in parameter schema is invalid: {violations:?}")
        })
    }

    /// Parses a schema file. Every problem is reported with its path
    /// (`params.rerank_weight_price.min`).
    pub fn from_json(text: &str) -> Result<Self, Vec<FieldViolation>> {
        let file: SchemaFile = serde_json::from_str(text)
            .map_err(|err| vec![FieldViolation::new("", err.to_string())])?;
        let mut violations = Vec::new();
        let mut params = BTreeMap::new();
        let key_format = key_format();
        for (key, spec) in file.params {
            let path = format!("params.{key}");
            if !key_format.is_match(&key) {
                violations.push(FieldViolation::new(
                    &path,
                    "parameter names are 1 to 64 characters: lowercase letters, digits and '_', starting with a letter",
                ));
            }
            let spec = match spec {
                SpecFile::String { pattern, .. } => {
                    let pattern = match pattern {
                        None => None,
                        Some(pattern) => match Regex::new(&format!("^(?:{pattern})$")) {
                            Ok(regex) => Some(regex),
                            Err(err) => {
                                violations.push(FieldViolation::new(
                                    format!("{path}.pattern"),
                                    format!("not a valid regular expression: {err}"),
                                ));
                                None
                            }
                        },
                    };
                    ParamSpec::String { pattern }
                }
                SpecFile::Number { min, max, .. } => {
                    if let (Some(min), Some(max)) = (min, max)
                        && min > max
                    {
                        violations.push(FieldViolation::new(
                            format!("{path}.max"),
                            format!("must be at least min ({min})"),
                        ));
                    }
                    ParamSpec::Number { min, max }
                }
                SpecFile::Integer { min, max, .. } => {
                    if let (Some(min), Some(max)) = (min, max)
                        && min > max
                    {
                        violations.push(FieldViolation::new(
                            format!("{path}.max"),
                            format!("must be at least min ({min})"),
                        ));
                    }
                    ParamSpec::Integer { min, max }
                }
                SpecFile::Boolean { .. } => ParamSpec::Boolean,
                SpecFile::Enum { values, .. } => {
                    if values.is_empty() {
                        violations.push(FieldViolation::new(
                            format!("{path}.values"),
                            "must list at least one value",
                        ));
                    }
                    ParamSpec::Enum { values }
                }
            };
            params.insert(key, spec);
        }
        if violations.is_empty() {
            Ok(Self { params })
        } else {
            Err(violations)
        }
    }

    /// The spec of parameter `key`.
    pub fn spec(&self, key: &str) -> Option<&ParamSpec> {
        self.params.get(key)
    }

    /// Names of every known parameter.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.params.keys().map(String::as_str)
    }

    /// Checks `params` against the schema. Violation paths start with
    /// `path` (e.g. `variants[1].params`). At most
    /// [`MAX_PARAM_VIOLATIONS`] are listed, then one counts the rest: a
    /// request of a hundred thousand unknown keys costs one pass, not a
    /// hundred thousand descriptions.
    pub fn check(&self, params: &Params, path: &str) -> Vec<FieldViolation> {
        let mut violations = Vec::new();
        let mut more = 0_usize;
        for (key, value) in params {
            if violations.len() == MAX_PARAM_VIOLATIONS {
                let known = self.params.get(key);
                more += usize::from(known.is_none_or(|spec| spec.check(value).is_err()));
                continue;
            }
            let field = format!("{path}.{key}");
            match self.params.get(key) {
                None => violations.push(FieldViolation::new(
                    field,
                    format!(
                        "unknown parameter; the schema knows: {}",
                        self.keys().collect::<Vec<_>>().join(", ")
                    ),
                )),
                Some(spec) => {
                    if let Err(description) = spec.check(value) {
                        violations.push(FieldViolation::new(field, description));
                    }
                }
            }
        }
        if more > 0 {
            violations.push(FieldViolation::new(
                path,
                format!("and {more} more parameters are unknown or invalid"),
            ));
        }
        violations
    }
}

/// Most violations [`ParamSchema::check`] lists for one set of params.
pub const MAX_PARAM_VIOLATIONS: usize = 50;

fn key_format() -> Regex {
    #[allow(clippy::unwrap_used)] // a constant pattern, covered by tests
    Regex::new("^[a-z][a-z0-9_]{0,63}$").unwrap()
}

// === impl ParamSpec ===

impl ParamSpec {
    /// Checks one value, describing the problem in words.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self {
            Self::String { pattern } => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("must be a string, got {}", type_name(value)))?;
                match pattern {
                    Some(pattern) if !pattern.is_match(text) => Err(format!(
                        "{text:?} does not match the pattern {}",
                        pattern.as_str()
                    )),
                    _ => Ok(()),
                }
            }
            Self::Number { min, max } => {
                let number = value
                    .as_f64()
                    .ok_or_else(|| format!("must be a number, got {}", type_name(value)))?;
                check_range(number, *min, *max)
            }
            Self::Integer { min, max } => {
                let number = value
                    .as_f64()
                    .ok_or_else(|| format!("must be an integer, got {}", type_name(value)))?;
                if number.fract() != 0.0 {
                    return Err(format!("must be an integer, got {number}"));
                }
                check_range(number, min.map(|m| m as f64), max.map(|m| m as f64))
            }
            Self::Boolean => value
                .as_bool()
                .map(|_| ())
                .ok_or_else(|| format!("must be true or false, got {}", type_name(value))),
            Self::Enum { values } => {
                let text = value
                    .as_str()
                    .ok_or_else(|| format!("must be a string, got {}", type_name(value)))?;
                if values.iter().any(|allowed| allowed == text) {
                    Ok(())
                } else {
                    Err(format!("{text:?} is not one of: {}", values.join(", ")))
                }
            }
        }
    }
}

fn check_range(number: f64, min: Option<f64>, max: Option<f64>) -> Result<(), String> {
    let below = min.is_some_and(|min| number < min);
    let above = max.is_some_and(|max| number > max);
    if !(below || above) {
        return Ok(());
    }
    Err(match (min, max) {
        (Some(min), Some(max)) => format!("must be between {min} and {max}, got {number}"),
        (Some(min), None) => format!("must be at least {min}, got {number}"),
        (None, Some(max)) => format!("must be at most {max}, got {number}"),
        (None, None) => unreachable!("out of range needs a bound"),
    })
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

//! A FHIR search query string, parsed into criteria the SQL builder understands.
//!
//! Only what the adapter really supports is accepted; anything else is a 400
//! `unknown-parameter`, never silently ignored (a portal that thinks it filtered must not
//! show a client more than it asked for).

use super::dates::{self, Prefix, Range};
use super::{Supported, supported_param};
use crate::error::{ApiError, ApiResult};
use crate::fhir::definitions::{self, ParamType};
use base64::Engine as _;

/// One token value: `code`, `system|code`, `|code` (no system) or `system|` (any code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenValue {
    /// `None`: any system; `Some("")`: no system.
    pub system: Option<String>,
    /// `None`: any code of the system.
    pub code: Option<String>,
}

/// A token parameter: values OR-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFilter {
    pub param: &'static str,
    pub values: Vec<TokenValue>,
}

/// A date parameter: values OR-ed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DateFilter {
    pub param: &'static str,
    pub values: Vec<(Prefix, Range)>,
}

/// What the results are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// The moment the version became visible (`_lastUpdated`); the default.
    LastUpdated,
    /// The `date` parameter's low end.
    Date,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sort {
    pub key: SortKey,
    pub descending: bool,
}

/// Where the next page starts: after `(key, version id)` in the sort order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub key: i64,
    pub version_id: i64,
    /// The `total` counted for the first page, carried to the next ones (not counted again).
    pub total: Option<i64>,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let text = match self.total {
            Some(t) => format!("{}.{}.{t}", self.key, self.version_id),
            None => format!("{}.{}", self.key, self.version_id),
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(text: &str) -> Option<Self> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let mut parts = raw.split('.');
        let cursor = Self {
            key: parts.next()?.parse().ok()?,
            version_id: parts.next()?.parse().ok()?,
            total: match parts.next() {
                Some(t) => Some(t.parse().ok()?),
                None => None,
            },
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// `_include=Type:param[:Target]`.
#[derive(Debug, Clone)]
pub struct Include {
    pub param: &'static str,
    pub target: Option<String>,
    pub paths: &'static [definitions::ParamPath],
}

/// Whether and how to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    Accurate,
    None,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct Query {
    pub resource_type: String,
    pub ids: Vec<Vec<String>>,
    /// `patient`/`subject` values (client ids), each occurrence AND-ed, values OR-ed.
    pub patients: Vec<Vec<String>>,
    pub tokens: Vec<TokenFilter>,
    pub dates: Vec<DateFilter>,
    pub last_updated: Vec<Vec<(Prefix, Range)>>,
    pub sort: Sort,
    pub count: u32,
    pub summary_count: bool,
    pub total: Total,
    pub includes: Vec<Include>,
    pub cursor: Option<Cursor>,
    /// The parameters as given, minus `_cursor`, for `self` and `next` links.
    pub echo: Vec<(String, String)>,
    /// Every search parameter the query filters or sorts by (not `_id`, `_lastUpdated`): what
    /// a redaction rule may forbid.
    pub used: Vec<&'static str>,
}

/// Limits from config.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub default: u32,
    pub max: u32,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::unknown_parameter(message)
}

/// At most this many parameters in one query (each repetition counts).
pub const MAX_PARAMS: usize = 30;
/// At most this many comma-separated values in one parameter.
pub const MAX_VALUES: usize = 100;
/// At most this many values in all of one query's parameters.
pub const MAX_TOTAL_VALUES: usize = 300;

/// Parses `pairs` (decoded query parameters) for a search of `resource_type`.
pub fn parse(resource_type: &str, pairs: &[(String, String)], counts: Counts) -> ApiResult<Query> {
    let mut q = Query {
        resource_type: resource_type.to_string(),
        ids: Vec::new(),
        patients: Vec::new(),
        tokens: Vec::new(),
        dates: Vec::new(),
        last_updated: Vec::new(),
        sort: Sort {
            key: SortKey::LastUpdated,
            descending: false,
        },
        count: counts.default,
        summary_count: false,
        total: Total::Accurate,
        includes: Vec::new(),
        cursor: None,
        echo: Vec::new(),
        used: Vec::new(),
    };
    let mut sorted = false;
    if pairs.len() > MAX_PARAMS {
        return Err(bad(format!(
            "{} parameters; a search takes at most {MAX_PARAMS}",
            pairs.len()
        )));
    }
    let values: usize = pairs.iter().map(|(_, v)| v.matches(',').count() + 1).sum();
    if values > MAX_TOTAL_VALUES {
        return Err(bad(format!(
            "{values} values in all; a search takes at most {MAX_TOTAL_VALUES}"
        )));
    }
    for (raw_name, value) in pairs {
        let (name, modifier) = match raw_name.split_once(':') {
            Some((n, m)) => (n, Some(m)),
            None => (raw_name.as_str(), None),
        };
        if name != "_cursor" {
            q.echo.push((raw_name.clone(), value.clone()));
        }
        let no_modifier = |q_name: &str| -> ApiResult<()> {
            match modifier {
                None => Ok(()),
                Some(m) => Err(bad(format!(
                    "modifier `:{m}` is not supported on `{q_name}`"
                ))),
            }
        };
        match name {
            "_id" => {
                no_modifier(name)?;
                q.ids.push(split_values(value, name)?);
            }
            "_lastUpdated" => {
                no_modifier(name)?;
                q.last_updated.push(date_values(value, name)?);
            }
            "_count" => {
                no_modifier(name)?;
                let n: u32 = value
                    .parse()
                    .map_err(|_| bad(format!("_count must be a whole number, not `{value}`")))?;
                if n == 0 {
                    q.summary_count = true;
                }
                q.count = n.clamp(1, counts.max);
            }
            "_sort" => {
                no_modifier(name)?;
                if sorted {
                    return Err(bad("_sort may be given once"));
                }
                sorted = true;
                q.sort = match value.as_str() {
                    "_lastUpdated" => Sort {
                        key: SortKey::LastUpdated,
                        descending: false,
                    },
                    "-_lastUpdated" => Sort {
                        key: SortKey::LastUpdated,
                        descending: true,
                    },
                    "date" | "-date" if supported_param(resource_type, "date").is_some() => {
                        q.used.push("date");
                        Sort {
                            key: SortKey::Date,
                            descending: value.starts_with('-'),
                        }
                    }
                    other => {
                        return Err(bad(format!(
                            "_sort `{other}` is not supported; use date, -date, _lastUpdated or -_lastUpdated"
                        )));
                    }
                };
            }
            "_summary" => {
                no_modifier(name)?;
                if value != "count" {
                    return Err(bad(format!(
                        "_summary={value} is not supported; only _summary=count"
                    )));
                }
                q.summary_count = true;
            }
            "_total" => {
                no_modifier(name)?;
                q.total = match value.as_str() {
                    "none" => Total::None,
                    "accurate" | "estimate" => Total::Accurate,
                    other => {
                        return Err(bad(format!(
                            "_total={other} is not one of none, estimate, accurate"
                        )));
                    }
                };
            }
            "_format" => {
                no_modifier(name)?;
                if !matches!(
                    value.as_str(),
                    "json" | "application/json" | "application/fhir+json"
                ) {
                    return Err(bad(format!(
                        "_format={value} is not supported; this server speaks JSON"
                    )));
                }
            }
            "_include" => {
                no_modifier(name)?;
                q.includes.push(parse_include(resource_type, value)?);
            }
            "_cursor" => {
                q.cursor = Some(Cursor::decode(value).ok_or_else(|| {
                    bad("_cursor is not one this server made; follow the `next` link")
                })?);
            }
            _ => {
                let Some(param) = supported_param(resource_type, name) else {
                    return Err(bad(format!(
                        "search parameter `{name}` is not supported for {resource_type}; see GET /fhir/metadata"
                    )));
                };
                add_param(&mut q, param, modifier, value)?;
            }
        }
    }
    Ok(q)
}

fn add_param(
    q: &mut Query,
    param: Supported,
    modifier: Option<&str>,
    value: &str,
) -> ApiResult<()> {
    if !q.used.contains(&param.name) {
        q.used.push(param.name);
    }
    match param.ty {
        ParamType::Token => {
            if let Some(m) = modifier {
                return Err(bad(format!(
                    "modifier `:{m}` is not supported on `{}`",
                    param.name
                )));
            }
            let values = split_values(value, param.name)?
                .into_iter()
                .map(|v| token_value(&v))
                .collect();
            q.tokens.push(TokenFilter {
                param: param.name,
                values,
            });
        }
        ParamType::Date => {
            if let Some(m) = modifier {
                return Err(bad(format!(
                    "modifier `:{m}` is not supported on `{}`",
                    param.name
                )));
            }
            q.dates.push(DateFilter {
                param: param.name,
                values: date_values(value, param.name)?,
            });
        }
        ParamType::Reference => {
            if let Some(m) = modifier
                && m != "Patient"
            {
                return Err(bad(format!(
                    "`{}:{m}`: only Patient references are searchable here",
                    param.name
                )));
            }
            let ids = split_values(value, param.name)?
                .into_iter()
                .map(|v| patient_id(&v, param.name))
                .collect::<ApiResult<Vec<_>>>()?;
            q.patients.push(ids);
        }
        _ => {
            return Err(bad(format!(
                "search parameter `{}` is not supported",
                param.name
            )));
        }
    }
    Ok(())
}

/// A client id out of `123`, `Patient/123` or `https://…/Patient/123`.
pub fn patient_id(value: &str, param: &str) -> ApiResult<String> {
    let id = match value.rsplit_once('/') {
        Some((before, id)) if before == "Patient" || before.ends_with("/Patient") => id,
        Some(_) => {
            return Err(bad(format!(
                "`{param}={value}`: only Patient references are searchable here"
            )));
        }
        None => value,
    };
    if crate::fhir::reference::is_fhir_id(id) {
        Ok(id.to_string())
    } else {
        Err(bad(format!("`{param}={value}`: `{id}` is not a valid id")))
    }
}

fn split_values(value: &str, name: &str) -> ApiResult<Vec<String>> {
    // FHIR escapes a literal comma as `\,`.
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(next) => current.push(next),
                None => current.push('\\'),
            },
            ',' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    if out.iter().any(String::is_empty) {
        return Err(bad(format!("`{name}` has an empty value")));
    }
    if out.len() > MAX_VALUES {
        return Err(bad(format!(
            "`{name}` has {} values; a parameter takes at most {MAX_VALUES}",
            out.len()
        )));
    }
    Ok(out)
}

fn token_value(text: &str) -> TokenValue {
    match text.split_once('|') {
        None => TokenValue {
            system: None,
            code: Some(text.to_string()),
        },
        Some((system, code)) => TokenValue {
            system: Some(system.to_string()),
            code: (!code.is_empty()).then(|| code.to_string()),
        },
    }
}

fn date_values(value: &str, name: &str) -> ApiResult<Vec<(Prefix, Range)>> {
    split_values(value, name)?
        .into_iter()
        .map(|v| {
            let (prefix, date) = dates::split_prefix(&v);
            dates::parse(date).map(|r| (prefix, r)).ok_or_else(|| {
                bad(format!(
                    "`{name}={v}`: not a date; write e.g. ge2026-11-01 or lt2026-11-23T10:00:00Z"
                ))
            })
        })
        .collect()
}

fn parse_include(resource_type: &str, value: &str) -> ApiResult<Include> {
    let mut parts = value.split(':');
    let (source, param, target) = (parts.next(), parts.next(), parts.next());
    let unsupported = || {
        bad(format!(
            "_include={value} is not supported; write {resource_type}:<reference parameter>[:<type>]"
        ))
    };
    if source != Some(resource_type) || parts.next().is_some() {
        return Err(unsupported());
    }
    let param = param.ok_or_else(unsupported)?;
    let def = definitions::search_param(resource_type, param)
        .filter(|d| d.ty == ParamType::Reference)
        .ok_or_else(unsupported)?;
    if let Some(t) = target
        && !def.targets.contains(&t)
    {
        return Err(unsupported());
    }
    Ok(Include {
        param: def.name,
        target: target.map(str::to_string),
        paths: def.paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTS: Counts = Counts {
        default: 50,
        max: 500,
    };

    fn q(ty: &str, query: &str) -> ApiResult<Query> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parse(ty, &pairs, COUNTS)
    }

    #[test]
    fn the_portal_query_parses() {
        let query = q(
            "Observation",
            "patient=Patient/p1&category=vital-signs&code=http://loinc.org|29463-7,http://loinc.org|8310-5&date=ge2026-01-01&_count=20&_sort=-date",
        )
        .unwrap();
        assert_eq!(query.patients, vec![vec!["p1".to_string()]]);
        assert_eq!(query.tokens.len(), 2);
        assert_eq!(query.tokens[1].values.len(), 2);
        assert_eq!(query.dates[0].values[0].0, Prefix::Ge);
        assert_eq!(query.count, 20);
        assert_eq!(
            query.sort,
            Sort {
                key: SortKey::Date,
                descending: true
            }
        );
    }

    #[test]
    fn anything_unsupported_is_refused() {
        for bad in [
            "foo=1",
            "code:text=x",
            "date=yesterday",
            "_sort=status",
            "_summary=true",
            "_count=many",
            "_include=Observation:code",
            "_include=*",
            "_revinclude=Provenance:target",
            "subject=Group/1",
            "patient=",
            "_cursor=abc",
            "_format=xml",
        ] {
            let err = q("Observation", bad).unwrap_err();
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn too_many_values_or_parameters_are_refused() {
        let many = |n: usize| {
            (0..n)
                .map(|k| format!("c{k}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        assert!(q("Observation", &format!("code={}", many(MAX_VALUES))).is_ok());
        assert!(q("Observation", &format!("code={}", many(MAX_VALUES + 1))).is_err());
        let repeated: Vec<String> = (0..=MAX_PARAMS).map(|k| format!("code=c{k}")).collect();
        assert!(q("Observation", &repeated.join("&")).is_err());
        let spread: Vec<String> = (0..4).map(|_| format!("code={}", many(90))).collect();
        assert!(q("Observation", &spread.join("&")).is_err());
    }

    #[test]
    fn counts_are_clamped_and_zero_means_count_only() {
        assert_eq!(q("Observation", "_count=9999").unwrap().count, 500);
        assert!(q("Observation", "_count=0").unwrap().summary_count);
    }

    #[test]
    fn cursors_round_trip() {
        let c = Cursor {
            key: -5,
            version_id: 42,
            total: None,
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        let t = Cursor {
            key: 7,
            version_id: 1,
            total: Some(300),
        };
        assert_eq!(Cursor::decode(&t.encode()), Some(t));
    }
}

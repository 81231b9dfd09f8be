//! Keys from an AWS shared credentials file, the format `aws configure`
//! writes and a Kubernetes Secret can be mounted as:
//!
//! ```text
//! [default]
//! aws_access_key_id = AKIA…
//! aws_secret_access_key = …
//! ```

use std::path::Path;

/// One profile's keys.
#[derive(Debug, PartialEq, Eq)]
pub struct Keys {
    /// `aws_access_key_id`
    pub access_key_id: String,
    /// `aws_secret_access_key`
    pub secret_access_key: String,
    /// `aws_session_token`, for temporary credentials.
    pub session_token: Option<String>,
}

/// Reads `profile` from the file; the error says what is wrong with it.
pub fn read(path: &Path, profile: &str) -> Result<Keys, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the S3 credentials file {}: {e}", path.display()))?;
    parse(&text, profile).map_err(|e| format!("S3 credentials file {}: {e}", path.display()))
}

fn parse(text: &str, profile: &str) -> Result<Keys, String> {
    let (mut section, mut seen) = (None::<String>, false);
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            section = Some(name.strip_prefix("profile ").unwrap_or(name).trim().to_owned());
            seen |= section.as_deref() == Some(profile);
            continue;
        }
        if section.as_deref() != Some(profile) {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {line:?} in [{profile}] is not `key = value`"));
        };
        let value = Some(value.trim().to_owned());
        match key.trim() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            _ => {}
        }
    }
    if !seen {
        return Err(format!("it has no [{profile}] profile; add one or choose another with --s3-profile"));
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            Ok(Keys { access_key_id, secret_access_key, session_token: token })
        }
        _ => Err(format!("profile [{profile}] needs both aws_access_key_id and aws_secret_access_key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_named_profile_only() {
        let text = "# keys\n[default]\naws_access_key_id = A1\naws_secret_access_key=S1\n\n[profile ci]\naws_access_key_id = A2\naws_secret_access_key = S2\naws_session_token = T2\n";
        assert_eq!(
            parse(text, "default"),
            Ok(Keys { access_key_id: "A1".into(), secret_access_key: "S1".into(), session_token: None })
        );
        assert_eq!(
            parse(text, "ci"),
            Ok(Keys { access_key_id: "A2".into(), secret_access_key: "S2".into(), session_token: Some("T2".into()) })
        );
        assert!(parse(text, "prod").unwrap_err().contains("no [prod] profile"));
        assert!(parse("[default]\naws_access_key_id = A\n", "default").unwrap_err().contains("needs both"));
    }
}

//! Docker: its registry mirrors only ever apply to Docker Hub, so the
//! acceleration host must itself resolve to the local agent (a hosts-file
//! entry) and be allowed over plain HTTP (`insecure-registries` in
//! `daemon.json`). Docker has no fallback: while the agent is down, its
//! pulls of the acceleration address fail.

use serde_json::Value;

use super::Error;

/// Docker's daemon configuration.
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

/// The hosts file.
pub const HOSTS: &str = "/etc/hosts";

const KEY: &str = "insecure-registries";

/// `daemon.json` with the acceleration host in `insecure-registries`. The
/// file is edited as text, so every other setting keeps its place and spelling.
pub fn daemon_json(existing: Option<&str>, acceleration_host: &str) -> Result<String, Error> {
    let invalid = |reason: String| Error::Invalid { path: DAEMON_JSON.into(), reason };
    let entry = Value::String(acceleration_host.to_owned()).to_string();
    let Some(existing) = existing.filter(|e| !e.trim().is_empty()) else {
        return Ok(format!("{{\n  \"{KEY}\": [{entry}]\n}}\n"));
    };
    let parsed: Value = serde_json::from_str(existing).map_err(|e| invalid(e.to_string()))?;
    let object = parsed.as_object().ok_or_else(|| invalid("it is not a JSON object".into()))?;
    let out = match object.get(KEY) {
        Some(Value::Array(list)) if list.iter().any(|v| v.as_str() == Some(acceleration_host)) => {
            return Ok(existing.to_owned());
        }
        Some(Value::Array(list)) => {
            // The key's array: the first `[` after `"insecure-registries"` and its colon.
            let key_at = find_key(existing).ok_or_else(|| invalid(format!("cannot find \"{KEY}\"")))?;
            let open =
                key_at + existing[key_at..].find('[').ok_or_else(|| invalid(format!("\"{KEY}\" has no list")))?;
            let separator = if list.is_empty() { "" } else { ", " };
            format!("{}{entry}{separator}{}", &existing[..=open], &existing[open + 1..])
        }
        Some(_) => return Err(invalid(format!("\"{KEY}\" must be a list of registry addresses"))),
        None => {
            let open = existing.find('{').ok_or_else(|| invalid("no object".into()))?;
            let separator = if object.is_empty() { "\n" } else { "," };
            format!("{}\n  \"{KEY}\": [{entry}]{separator}{}", &existing[..=open], &existing[open + 1..])
        }
    };
    // A key spelled with escapes, or a string containing the key's name,
    // could mislead the text search: check what came out.
    let check: Value =
        serde_json::from_str(&out).map_err(|e| invalid(format!("merging produced invalid JSON: {e}")))?;
    let listed = check[KEY].as_array().is_some_and(|l| l.iter().any(|v| v.as_str() == Some(acceleration_host)));
    if !listed {
        return Err(invalid(format!("could not add {acceleration_host} to \"{KEY}\"; add it by hand")));
    }
    Ok(out)
}

/// Byte offset of the top-level key `"insecure-registries"`.
fn find_key(text: &str) -> Option<usize> {
    let quoted = format!("\"{KEY}\"");
    let at = text.find(&quoted)?;
    let after = at + quoted.len();
    text[after..].trim_start().starts_with(':').then_some(after)
}

/// The hosts file with `hostname` resolving to `ip`, unless some line already maps it.
pub fn hosts_file(existing: Option<&str>, hostname: &str, ip: &str) -> String {
    let existing = existing.unwrap_or("");
    let mapped = existing.lines().any(|line| {
        let line = line.split('#').next().unwrap_or("");
        line.split_whitespace().skip(1).any(|name| name.eq_ignore_ascii_case(hostname))
    });
    if mapped {
        return existing.to_owned();
    }
    let mut out = existing.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{ip} {hostname} # damselfly-agent node-setup: the local Damselfly agent\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_daemon_json_allows_the_acceleration_host_over_http() {
        assert_eq!(
            daemon_json(None, "p2p.r:65001").expect("fresh"),
            "{\n  \"insecure-registries\": [\"p2p.r:65001\"]\n}\n"
        );
        assert_eq!(
            daemon_json(Some("{}"), "p2p.r:65001").expect("empty"),
            "{\n  \"insecure-registries\": [\"p2p.r:65001\"]\n}"
        );
    }

    #[test]
    fn merging_into_daemon_json_keeps_every_other_setting_as_written() {
        let existing = "{\n    \"log-driver\": \"journald\",\n    \"data-root\": \"/srv/docker\"\n}\n";
        assert_eq!(
            daemon_json(Some(existing), "p2p.r:65001").expect("merge"),
            "{\n  \"insecure-registries\": [\"p2p.r:65001\"],\n    \"log-driver\": \"journald\",\n    \"data-root\": \"/srv/docker\"\n}\n"
        );
        let listed = "{\"insecure-registries\" : [ \"10.0.0.1:5000\" ], \"debug\": true}";
        let merged = daemon_json(Some(listed), "p2p.r:65001").expect("merge into list");
        assert_eq!(merged, "{\"insecure-registries\" : [\"p2p.r:65001\",  \"10.0.0.1:5000\" ], \"debug\": true}");
        assert_eq!(daemon_json(Some(&merged), "p2p.r:65001").expect("again"), merged);
        let empty_list = "{\"insecure-registries\": []}";
        assert_eq!(daemon_json(Some(empty_list), "h:1").expect("empty list"), "{\"insecure-registries\": [\"h:1\"]}");
    }

    #[test]
    fn a_daemon_json_that_is_not_an_object_is_refused() {
        assert!(matches!(daemon_json(Some("[1]"), "h"), Err(Error::Invalid { .. })));
        assert!(matches!(daemon_json(Some("{\"insecure-registries\": \"h\"}"), "h"), Err(Error::Invalid { .. })));
        assert!(matches!(daemon_json(Some("{,"), "h"), Err(Error::Invalid { .. })));
    }

    #[test]
    fn the_hosts_file_gets_one_line_unless_the_name_is_already_mapped() {
        let existing = "127.0.0.1\tlocalhost\n::1 localhost # v6";
        assert_eq!(
            hosts_file(Some(existing), "p2p.r", "127.0.0.1"),
            "127.0.0.1\tlocalhost\n::1 localhost # v6\n127.0.0.1 p2p.r # damselfly-agent node-setup: the local Damselfly agent\n"
        );
        let mapped = "10.1.1.1 other P2P.R\n";
        assert_eq!(hosts_file(Some(mapped), "p2p.r", "127.0.0.1"), mapped);
    }
}

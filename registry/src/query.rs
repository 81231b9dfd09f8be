//! Query-string decoding shared by the APIs. Repeated keys (the token
//! endpoint's `scope`) are kept, in order.

use std::collections::HashMap;

/// Every `key=value` pair, percent-decoded, in order.
pub fn pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The pairs as a map; a repeated key keeps its last value.
pub fn map(q: &str) -> HashMap<String, String> {
    pairs(q).into_iter().collect()
}

/// Decodes `%XX` escapes and `+` as a space.
pub fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = if b[i] == b'%' && i + 2 < b.len() { hex(b[i + 1]).zip(hex(b[i + 2])) } else { None };
        match (decoded, b[i]) {
            (Some((hi, lo)), _) => {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_keeps_repeats() {
        assert_eq!(
            pairs("scope=repository%3Aa%2Fb%3Apull&scope=registry:catalog:*&x=a+b&flag"),
            vec![
                ("scope".into(), "repository:a/b:pull".into()),
                ("scope".into(), "registry:catalog:*".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), "".into()),
            ]
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}

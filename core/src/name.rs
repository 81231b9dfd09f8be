use std::fmt;
use std::str::FromStr;

/// Longest repository name accepted; clients join it with a host name and many cap the whole at 255.
const MAX_NAME_LEN: usize = 255;

/// A repository name that matches the OCI Distribution grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

/// Why a string is not a repository name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The name is empty or longer than the limit.
    #[error("repository name must be 1 to {MAX_NAME_LEN} characters long")]
    Length,
    /// A path component breaks the grammar.
    #[error("repository name component {0:?} is invalid: use lowercase letters and digits, separated by '.', '_', '__' or '-'")]
    Component(String),
}

impl RepositoryName {
    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first path segment, which the registry treats as the namespace.
    pub fn namespace(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }
}

fn component_is_valid(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: '.', '_', '__' or one or more '-'.
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok || i >= b.len() || !alnum(b[i]) {
            return false;
        }
    }
    true
}

impl FromStr for RepositoryName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > MAX_NAME_LEN {
            return Err(NameError::Length);
        }
        if let Some(bad) = s.split('/').find(|c| !component_is_valid(c)) {
            return Err(NameError::Component(bad.to_owned()));
        }
        Ok(RepositoryName(s.to_owned()))
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_spec_names_with_many_segments() {
        for ok in ["a", "library/ubuntu", "a/b/c/d/e/f/g/h/i", "my-app", "my--app", "a.b", "a_b", "a__b", "x1/y2.z3"] {
            assert!(ok.parse::<RepositoryName>().is_ok(), "{ok}");
        }
        let n: RepositoryName = "team/app/web".parse().unwrap();
        assert_eq!(n.namespace(), "team");
    }

    #[test]
    fn rejects_names_outside_the_grammar() {
        for bad in ["", "A", "a/", "/a", "a//b", "-a", "a-", "a..b", "a___b", "a._b", "a b", "a/<b>", "ä"] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad:?}");
        }
        assert_eq!("a".repeat(256).parse::<RepositoryName>(), Err(NameError::Length));
    }
}

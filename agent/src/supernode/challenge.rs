//! The registry's token challenge: where clients get tokens, and for what
//! audience. The mirror answers clients with it, and `get` follows it.

/// The registry's `WWW-Authenticate` challenge, learnt from its `/v2/`.
#[derive(Clone, Debug)]
pub struct Challenge {
    /// Token endpoint.
    pub realm: String,
    /// Service name: the audience of access tokens.
    pub service: String,
    /// Issuer of tokens and tickets: the realm's base URL.
    pub issuer: String,
}

impl Challenge {
    /// The header value for a 401 about `name`.
    pub fn header(&self, name: Option<&str>) -> String {
        let mut v = format!("Bearer realm=\"{}\",service=\"{}\"", self.realm, self.service);
        if let Some(name) = name {
            v.push_str(&format!(",scope=\"repository:{name}:pull\""));
        }
        v
    }

    /// Parses a `WWW-Authenticate: Bearer realm=…,service=…` header.
    pub fn parse(header: &str) -> Option<Challenge> {
        let rest = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer "))?;
        let mut realm = None;
        let mut service = None;
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=')?;
            let v = v.trim_matches('"').to_owned();
            match k {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                _ => {}
            }
        }
        let realm = realm?;
        let issuer = realm.strip_suffix("/auth/token").unwrap_or(&realm).to_owned();
        Some(Challenge { realm, service: service.unwrap_or_default(), issuer })
    }
}

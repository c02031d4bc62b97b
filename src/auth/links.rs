//! Signed links to a result's pictures, for cards.
//!
//! A card's link is opened by the clinician's browser, which carries no CDS client JWT. So the
//! link itself is the credential: `?exp=<unix seconds>&sig=<HMAC-SHA256(path, exp)>`, valid
//! for `results.link_ttl_secs`. The HMAC key is derived from the audit checkpoint key, which
//! every instance on one database already shares, under its own label so the two uses never
//! mix.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

#[derive(Clone)]
pub struct LinkSigner {
    key: hmac::Key,
    ttl_secs: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LinkRefusal {
    Missing,
    Expired,
    BadSignature,
}

impl LinkRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            LinkRefusal::Missing => "link-unsigned",
            LinkRefusal::Expired => "link-expired",
            LinkRefusal::BadSignature => "link-bad-signature",
        }
    }
}

impl LinkSigner {
    /// `secret` is key material private to this deployment (32 bytes or more).
    pub fn new(secret: &[u8], ttl_secs: i64) -> LinkSigner {
        LinkSigner { key: hmac::Key::new(hmac::HMAC_SHA256, secret), ttl_secs }
    }

    fn mac(&self, path: &str, exp: i64) -> String {
        B64URL.encode(hmac::sign(&self.key, format!("radsight-link-v1\n{path}\n{exp}").as_bytes()))
    }

    /// `{base}{path}?exp=..&sig=..`, valid from now for the configured lifetime.
    pub fn sign(&self, base: &str, path: &str, now: i64) -> String {
        let exp = now + self.ttl_secs;
        format!("{base}{path}?exp={exp}&sig={}", self.mac(path, exp))
    }

    /// Checks the `exp` and `sig` query parameters of a request for `path`.
    pub fn verify(&self, path: &str, query: &str, now: i64) -> Result<(), LinkRefusal> {
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.parse::<i64>().ok(),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        let (Some(exp), Some(sig)) = (exp, sig) else { return Err(LinkRefusal::Missing) };
        let Ok(sig) = B64URL.decode(sig) else { return Err(LinkRefusal::BadSignature) };
        hmac::verify(&self.key, format!("radsight-link-v1\n{path}\n{exp}").as_bytes(), &sig).map_err(|_| LinkRefusal::BadSignature)?;
        if now > exp {
            return Err(LinkRefusal::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_link_verifies_until_it_expires() {
        let s = LinkSigner::new(&[7; 32], 60);
        let url = s.sign("https://r.example", "/results/abc/saliency.png", 1_000);
        let query = url.split_once('?').unwrap().1;
        assert_eq!(s.verify("/results/abc/saliency.png", query, 1_030), Ok(()));
        assert_eq!(s.verify("/results/abc/saliency.png", query, 1_061), Err(LinkRefusal::Expired));
        assert_eq!(s.verify("/results/other/saliency.png", query, 1_030), Err(LinkRefusal::BadSignature));
        let stretched = query.replace("exp=1060", "exp=9999");
        assert_eq!(s.verify("/results/abc/saliency.png", &stretched, 1_030), Err(LinkRefusal::BadSignature));
        assert_eq!(s.verify("/results/abc/saliency.png", "", 1_030), Err(LinkRefusal::Missing));
        let other = LinkSigner::new(&[8; 32], 60);
        assert_eq!(other.verify("/results/abc/saliency.png", query, 1_030), Err(LinkRefusal::BadSignature));
    }
}

//! Client signing keys for `radsight keys`: a newcomer generates a key pair, registers the
//! printed JWKS as a client, and signs hook requests exactly as an EHR would. The tests use the
//! same code to make real keys.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0:?} is not a supported client signing algorithm (use ES384, ES256, RS384 or RS256)")]
    UnsupportedAlgorithm(Algorithm),
    #[error("key generation failed")]
    Generate,
    #[error("the private key is not a valid PKCS#8 PEM for {alg:?}")]
    ReadKey { alg: Algorithm },
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// A private signing key with the `kid` (its RFC 7638 thumbprint) and algorithm it signs with.
pub struct ClientKey {
    pub alg: Algorithm,
    pub kid: String,
    pkcs8_der: Vec<u8>,
}

impl ClientKey {
    pub fn generate(alg: Algorithm) -> Result<ClientKey, KeyError> {
        let der = match alg {
            Algorithm::ES384 | Algorithm::ES256 => {
                let curve = if alg == Algorithm::ES384 { &ECDSA_P384_SHA384_FIXED_SIGNING } else { &ECDSA_P256_SHA256_FIXED_SIGNING };
                EcdsaKeyPair::generate_pkcs8(curve, &SystemRandom::new()).map_err(|_| KeyError::Generate)?.as_ref().to_vec()
            }
            Algorithm::RS384 | Algorithm::RS256 => {
                let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).map_err(|_| KeyError::Generate)?;
                let der: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().map_err(|_| KeyError::Generate)?;
                der.as_ref().to_vec()
            }
            other => return Err(KeyError::UnsupportedAlgorithm(other)),
        };
        ClientKey::from_pkcs8(alg, der)
    }

    /// Reads a PKCS#8 PEM private key (as written by [`ClientKey::to_pem`]).
    pub fn from_pem(alg: Algorithm, pem: &str) -> Result<ClientKey, KeyError> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body.trim()).map_err(|_| KeyError::ReadKey { alg })?;
        ClientKey::from_pkcs8(alg, der)
    }

    fn from_pkcs8(alg: Algorithm, pkcs8_der: Vec<u8>) -> Result<ClientKey, KeyError> {
        let mut key = ClientKey { alg, kid: String::new(), pkcs8_der };
        let jwk = key.public_jwk_without_kid().map_err(|_| KeyError::ReadKey { alg })?;
        key.kid = jwk.thumbprint(ThumbprintHash::SHA256).map_err(|_| KeyError::ReadKey { alg })?;
        Ok(key)
    }

    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8_der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"))
    }

    fn encoding_key(&self) -> Result<EncodingKey, jsonwebtoken::errors::Error> {
        match self.alg {
            // jsonwebtoken signs RSA from PKCS#1; its PEM reader unwraps our PKCS#8.
            Algorithm::RS256 | Algorithm::RS384 => EncodingKey::from_rsa_pem(self.to_pem().as_bytes()),
            _ => Ok(EncodingKey::from_ec_der(&self.pkcs8_der)),
        }
    }

    fn public_jwk_without_kid(&self) -> Result<Jwk, jsonwebtoken::errors::Error> {
        Jwk::from_encoding_key(&self.encoding_key()?, self.alg)
    }

    /// The public key as a JWK with `kid`, `alg` and `use: sig`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = self.public_jwk_without_kid().expect("a key read successfully has a public JWK");
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = KeyAlgorithm::from_algorithm(self.alg);
        jwk
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet { keys: vec![self.public_jwk()] }
    }

    /// Signs arbitrary claims with this key's `kid`, `typ: JWT` and optional `jku`.
    pub fn sign(&self, claims: &Value, jku: Option<&str>) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        header.jku = jku.map(str::to_owned);
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding_key()?)?)
    }

    /// A CDS Hooks client JWT for a call to `aud`, valid for five minutes, with a fresh `jti`.
    pub fn client_token(&self, iss: &str, aud: &str) -> Result<String, KeyError> {
        self.sign(&Self::claims(iss, aud), None)
    }

    /// The same with a `scope` claim (auditor clients need `audit.read`).
    pub fn scoped_token(&self, iss: &str, aud: &str, scope: &str) -> Result<String, KeyError> {
        let mut claims = Self::claims(iss, aud);
        claims["scope"] = Value::from(scope);
        self.sign(&claims, None)
    }

    fn claims(iss: &str, aud: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({"iss": iss, "aud": aud, "iat": now, "exp": now + 300, "jti": uuid::Uuid::new_v4().to_string()})
    }
}

trait FromAlgorithm {
    fn from_algorithm(alg: Algorithm) -> Option<KeyAlgorithm>;
}

impl FromAlgorithm for KeyAlgorithm {
    fn from_algorithm(alg: Algorithm) -> Option<KeyAlgorithm> {
        Some(match alg {
            Algorithm::ES256 => KeyAlgorithm::ES256,
            Algorithm::ES384 => KeyAlgorithm::ES384,
            Algorithm::RS256 => KeyAlgorithm::RS256,
            Algorithm::RS384 => KeyAlgorithm::RS384,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_through_pem_with_a_stable_kid() {
        for alg in [Algorithm::ES384, Algorithm::RS384] {
            let key = ClientKey::generate(alg).unwrap();
            let again = ClientKey::from_pem(alg, &key.to_pem()).unwrap();
            assert_eq!(key.kid, again.kid);
            let jwks = serde_json::to_value(key.jwks()).unwrap();
            assert_eq!(jwks["keys"][0]["kid"], key.kid.as_str());
            assert_eq!(jwks["keys"][0]["alg"], format!("{alg:?}"));
            assert!(jwks["keys"][0].get("d").is_none(), "the JWKS must not contain the private key");
        }
    }
}

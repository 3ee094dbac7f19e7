//! The encrypting providers with upstream's stored layout:
//!
//! - `aescbc`: `k8s:enc:aescbc:v1:<key>:` + IV (16 bytes) + AES-CBC ciphertext of the
//!   PKCS#7-padded data;
//! - `secretbox`: `k8s:enc:secretbox:v1:<key>:` + nonce (24 bytes) + NaCl secretbox
//!   (Poly1305 tag, then XSalsa20 ciphertext).
//!
//! Neither binds additional data (the key of the object), as upstream.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use crypto_secretbox::{AeadInPlace, KeyInit, XSalsa20Poly1305};
use ring::rand::SecureRandom;

/// Reserved for encrypted data: no identity read hands out a value with this prefix.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
pub const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
pub const SECRETBOX_PREFIX: &str = "k8s:enc:secretbox:v1:";
/// The `transformer_prefix` metric label of plain reads, as upstream.
pub const IDENTITY: &str = "identity";

const BLOCK: usize = 16;
const NONCE: usize = 24;
const TAG: usize = 16;

/// Why a value could not be encrypted or decrypted. The messages are upstream's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransformError {
    #[error("the stored data was shorter than the required size")]
    TooShort,
    #[error("the stored data is not a multiple of the block size")]
    NotBlockMultiple,
    #[error("invalid padding on input")]
    Padding,
    #[error("failed to decrypt the stored data: wrong key or corrupted data")]
    Open,
    #[error("no matching prefix found")]
    NoMatchingPrefix,
    #[error("unable to read sufficient random bytes")]
    Random,
}

/// An AES key of one of the three sizes.
pub enum AesKey {
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

impl AesKey {
    pub fn new(secret: &[u8]) -> Option<AesKey> {
        Some(match secret.len() {
            16 => AesKey::Aes128(secret.try_into().ok()?),
            24 => AesKey::Aes192(secret.try_into().ok()?),
            32 => AesKey::Aes256(secret.try_into().ok()?),
            _ => return None,
        })
    }
}

pub enum Cipher {
    AesCbc(AesKey),
    Secretbox(Box<XSalsa20Poly1305>),
}

/// One named key of a provider, with the prefix its values carry.
pub struct Keyed {
    /// `k8s:enc:<provider>:v1:<name>:`.
    pub prefix: Vec<u8>,
    /// `k8s:enc:<provider>:v1:`, the metric label.
    pub provider_prefix: &'static str,
    pub cipher: Cipher,
}

impl Keyed {
    pub fn aescbc(name: &str, key: AesKey) -> Keyed {
        Keyed {
            prefix: format!("{AESCBC_PREFIX}{name}:").into_bytes(),
            provider_prefix: AESCBC_PREFIX,
            cipher: Cipher::AesCbc(key),
        }
    }

    pub fn secretbox(name: &str, key: &[u8; 32]) -> Keyed {
        Keyed {
            prefix: format!("{SECRETBOX_PREFIX}{name}:").into_bytes(),
            provider_prefix: SECRETBOX_PREFIX,
            cipher: Cipher::Secretbox(Box::new(XSalsa20Poly1305::new(key.into()))),
        }
    }

    /// The prefixed, encrypted form of `data` with a fresh random IV or nonce.
    pub fn seal(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut random = [0u8; NONCE];
        let random = match self.cipher {
            Cipher::AesCbc(_) => &mut random[..BLOCK],
            Cipher::Secretbox(_) => &mut random[..],
        };
        ring::rand::SystemRandom::new()
            .fill(random)
            .map_err(|_| TransformError::Random)?;
        self.seal_with(random, data)
    }

    /// [`Keyed::seal`] with a given IV (aescbc, 16 bytes) or nonce (secretbox, 24).
    pub(super) fn seal_with(&self, random: &[u8], data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::with_capacity(self.prefix.len() + NONCE + TAG + data.len() + BLOCK);
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(random);
        match &self.cipher {
            Cipher::AesCbc(key) => {
                let iv: &[u8; BLOCK] = random.try_into().map_err(|_| TransformError::Random)?;
                let body = match key {
                    AesKey::Aes128(k) => cbc::Encryptor::<aes::Aes128>::new(k.into(), iv.into())
                        .encrypt_padded_vec_mut::<Pkcs7>(data),
                    AesKey::Aes192(k) => cbc::Encryptor::<aes::Aes192>::new(k.into(), iv.into())
                        .encrypt_padded_vec_mut::<Pkcs7>(data),
                    AesKey::Aes256(k) => cbc::Encryptor::<aes::Aes256>::new(k.into(), iv.into())
                        .encrypt_padded_vec_mut::<Pkcs7>(data),
                };
                out.extend_from_slice(&body);
            }
            Cipher::Secretbox(cipher) => {
                let nonce: &[u8; NONCE] = random.try_into().map_err(|_| TransformError::Random)?;
                let tag_at = out.len();
                out.extend_from_slice(&[0u8; TAG]);
                let body_at = out.len();
                out.extend_from_slice(data);
                // NaCl's layout: the tag before the ciphertext.
                let tag = cipher
                    .encrypt_in_place_detached(nonce.into(), b"", &mut out[body_at..])
                    .map_err(|_| TransformError::Open)?;
                out[tag_at..body_at].copy_from_slice(&tag);
            }
        }
        Ok(out)
    }

    /// The plain data of `data` (the stored value after this key's prefix).
    pub fn open(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        match &self.cipher {
            Cipher::AesCbc(key) => {
                if data.len() < BLOCK {
                    return Err(TransformError::TooShort);
                }
                let (iv, body) = data.split_at(BLOCK);
                if body.is_empty() || body.len() % BLOCK != 0 {
                    return Err(TransformError::NotBlockMultiple);
                }
                let iv: &[u8; BLOCK] = iv.try_into().map_err(|_| TransformError::TooShort)?;
                let plain = match key {
                    AesKey::Aes128(k) => cbc::Decryptor::<aes::Aes128>::new(k.into(), iv.into())
                        .decrypt_padded_vec_mut::<Pkcs7>(body),
                    AesKey::Aes192(k) => cbc::Decryptor::<aes::Aes192>::new(k.into(), iv.into())
                        .decrypt_padded_vec_mut::<Pkcs7>(body),
                    AesKey::Aes256(k) => cbc::Decryptor::<aes::Aes256>::new(k.into(), iv.into())
                        .decrypt_padded_vec_mut::<Pkcs7>(body),
                };
                plain.map_err(|_| TransformError::Padding)
            }
            Cipher::Secretbox(cipher) => {
                if data.len() < NONCE + TAG {
                    return Err(TransformError::TooShort);
                }
                let (nonce, rest) = data.split_at(NONCE);
                let (tag, body) = rest.split_at(TAG);
                let nonce: &[u8; NONCE] = nonce.try_into().map_err(|_| TransformError::TooShort)?;
                let tag: &[u8; TAG] = tag.try_into().map_err(|_| TransformError::TooShort)?;
                let mut plain = body.to_vec();
                cipher
                    .decrypt_in_place_detached(nonce.into(), b"", &mut plain, tag.into())
                    .map_err(|_| TransformError::Open)?;
                Ok(plain)
            }
        }
    }
}

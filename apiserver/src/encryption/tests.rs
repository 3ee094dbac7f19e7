use super::provider::{AesKey, Keyed};
use super::*;
use base64::Engine;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn config(providers: &str) -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
    )
}

fn aescbc(keys: &[(&str, &[u8])]) -> String {
    let mut s = "  - aescbc:\n      keys:\n".to_string();
    for (name, secret) in keys {
        s += &format!("      - name: {name}\n        secret: {}\n", b64(secret));
    }
    s
}

fn secrets(t: &Transformers) -> &Arc<Transformer> {
    t.for_resource("", "secrets")
}

fn error_of(text: &str) -> String {
    match Transformers::parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn aescbc_writes_upstreams_layout_and_reads_it_back() {
    let t = Transformers::parse(&config(&aescbc(&[("key1", &[7; 32])]))).unwrap();
    let plain = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;
    let stored = secrets(&t).to_storage(plain.to_vec()).unwrap();
    let prefix = b"k8s:enc:aescbc:v1:key1:";
    assert!(stored.starts_with(prefix));
    // IV, then whole blocks of ciphertext with at least one byte of padding.
    let body = &stored[prefix.len() + 16..];
    assert_eq!(body.len(), (plain.len() / 16 + 1) * 16);
    assert!(!stored.windows(8).any(|w| w == b"password"));
    assert_eq!(&*secrets(&t).from_storage(&stored).unwrap(), plain);
    // A fresh IV each time.
    assert_ne!(stored, secrets(&t).to_storage(plain.to_vec()).unwrap());
    // Resources the configuration does not name are stored as they are.
    let cm = t.for_resource("", "configmaps");
    assert!(!cm.encrypts());
    assert_eq!(cm.to_storage(plain.to_vec()).unwrap(), plain);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Vectors from other implementations (Python's `cryptography` for AES-256-CBC with
/// PKCS#7, PyNaCl for secretbox): our stored bytes are upstream's bytes.
#[test]
fn providers_match_reference_vectors() {
    let plain = b"hello world! this is my plaintext.";
    let cbc = Keyed::aescbc("k", AesKey::new(&[0x42; 32]).unwrap());
    let sealed = cbc.seal_with(&[0x24; 16], plain).unwrap();
    let prefix = b"k8s:enc:aescbc:v1:k:".len();
    assert_eq!(hex(&sealed[prefix..prefix + 16]), "24".repeat(16));
    assert_eq!(
        hex(&sealed[prefix + 16..]),
        "1718b1dfc1f147fdf82f6ed08445c4512c861b013c808c928851c3c771b5df350620bcec613c8e336963859970e876bf"
    );
    let sb = Keyed::secretbox("k", &[0x42; 32]);
    let sealed = sb.seal_with(&[0x24; 24], plain).unwrap();
    let prefix = b"k8s:enc:secretbox:v1:k:".len();
    assert_eq!(
        hex(&sealed[prefix..]),
        "242424242424242424242424242424242424242424242424ee77b3380a6219f8f01118f4c2f458b23a88b94caeb7df7ec76368a587d7ce9ccc7d00fb8d381d258fa3cc1056342ff02b1f"
    );
    assert_eq!(sb.open(&sealed[prefix..]).unwrap(), plain);
}

#[test]
fn aescbc_rejects_wrong_key_truncated_data_and_bad_padding() {
    let plain = br#"{"kind":"Secret","metadata":{"name":"s"}}"#.to_vec();
    let t1 = Transformers::parse(&config(&aescbc(&[("key1", &[1; 16])]))).unwrap();
    let other = Transformers::parse(&config(&aescbc(&[("key1", &[2; 16])]))).unwrap();
    let keyed = Keyed::aescbc("key1", AesKey::new(&[1; 16]).unwrap());
    // A fixed IV, so the wrong key's garbage (and its padding) is the same every run.
    let stored = keyed.seal_with(&[9; 16], &plain).unwrap();
    assert_eq!(&*secrets(&t1).from_storage(&stored).unwrap(), &plain[..]);
    assert_eq!(
        secrets(&other).from_storage(&stored).unwrap_err(),
        TransformError::Padding
    );
    let prefix = b"k8s:enc:aescbc:v1:key1:".len();
    assert_eq!(
        secrets(&t1)
            .from_storage(&stored[..prefix + 10])
            .unwrap_err(),
        TransformError::TooShort
    );
    assert_eq!(
        secrets(&t1)
            .from_storage(&stored[..stored.len() - 3])
            .unwrap_err(),
        TransformError::NotBlockMultiple
    );
    // Flip a bit of the IV's last byte: the last block decrypts with a changed
    // padding byte.
    let mut tampered = stored.clone();
    let last_block_iv = tampered.len() - 17;
    tampered[last_block_iv] ^= 0x80;
    assert_eq!(
        secrets(&t1).from_storage(&tampered).unwrap_err(),
        TransformError::Padding
    );
}

#[test]
fn secretbox_round_trip_and_failures() {
    let text = config(&format!(
        "  - secretbox:\n      keys:\n      - name: box1\n        secret: {}\n",
        b64(&[5; 32])
    ));
    let t = Transformers::parse(&text).unwrap();
    let plain = b"{\"kind\":\"Secret\"}".to_vec();
    let stored = secrets(&t).to_storage(plain.clone()).unwrap();
    let prefix = b"k8s:enc:secretbox:v1:box1:";
    assert!(stored.starts_with(prefix));
    // Nonce, tag, ciphertext of the same length as the data.
    assert_eq!(stored.len(), prefix.len() + 24 + 16 + plain.len());
    assert_eq!(&*secrets(&t).from_storage(&stored).unwrap(), &plain[..]);
    let mut tampered = stored.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        secrets(&t).from_storage(&tampered).unwrap_err(),
        TransformError::Open
    );
    assert_eq!(
        secrets(&t)
            .from_storage(&stored[..prefix.len() + 30])
            .unwrap_err(),
        TransformError::TooShort
    );
    let wrong = Transformers::parse(&text.replace(&b64(&[5; 32]), &b64(&[6; 32]))).unwrap();
    assert_eq!(
        secrets(&wrong).from_storage(&stored).unwrap_err(),
        TransformError::Open
    );
}

#[test]
fn rotation_reads_every_configured_key_and_writes_the_first() {
    let old = Transformers::parse(&config(&aescbc(&[("key1", &[1; 32])]))).unwrap();
    let rotated =
        Transformers::parse(&config(&aescbc(&[("key2", &[2; 32]), ("key1", &[1; 32])]))).unwrap();
    let written_old = secrets(&old).to_storage(b"{}".to_vec()).unwrap();
    assert_eq!(
        &*secrets(&rotated).from_storage(&written_old).unwrap(),
        b"{}"
    );
    let written_new = secrets(&rotated).to_storage(b"{}".to_vec()).unwrap();
    assert!(written_new.starts_with(b"k8s:enc:aescbc:v1:key2:"));
    // Data under the old key is stale: an update rewrites it even when nothing changed.
    assert!(secrets(&rotated).is_stale(&written_old));
    assert!(!secrets(&rotated).is_stale(&written_new));
    assert!(secrets(&rotated).is_stale(b"{}"));
    // The old configuration cannot read the new key's data, and says so.
    assert_eq!(
        secrets(&old).from_storage(&written_new).unwrap_err(),
        TransformError::NoMatchingPrefix
    );
}

#[test]
fn identity_reads_plain_data_only_when_configured() {
    let encrypt_only = Transformers::parse(&config(&aescbc(&[("key1", &[1; 32])]))).unwrap();
    assert_eq!(
        secrets(&encrypt_only).from_storage(b"{}").unwrap_err(),
        TransformError::NoMatchingPrefix
    );
    // Upstream's decrypt-all-then-disable flow: identity first, the old key after it.
    let text = config(&format!(
        "  - identity: {{}}\n{}",
        aescbc(&[("key1", &[1; 32])])
    ));
    let disabling = Transformers::parse(&text).unwrap();
    let t = secrets(&disabling);
    assert!(!t.encrypts());
    let encrypted = secrets(&encrypt_only).to_storage(b"{}".to_vec()).unwrap();
    assert_eq!(&*t.from_storage(&encrypted).unwrap(), b"{}");
    assert_eq!(&*t.from_storage(b"{}").unwrap(), b"{}");
    assert_eq!(t.to_storage(b"{}".to_vec()).unwrap(), b"{}");
    assert!(t.is_stale(&encrypted));
    assert!(!t.is_stale(b"{}"));
    // Encrypted data of an unknown key is never handed out as plain data.
    assert_eq!(
        t.from_storage(b"k8s:enc:aescbc:v1:gone:0123456789abcdef0123456789abcdef")
            .unwrap_err(),
        TransformError::NoMatchingPrefix
    );
}

#[test]
fn resources_resolve_exact_then_group_then_everything() {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{}- resources: ['*.apps']\n  providers:\n{}- resources: ['*.*']\n  providers:\n  - identity: {{}}\n- resources: [configmaps]\n  providers:\n{}",
        aescbc(&[("a", &[1; 16])]),
        aescbc(&[("b", &[1; 16])]),
        aescbc(&[("late", &[1; 16])]),
    );
    let t = Transformers::parse(&text).unwrap();
    let prefix = |g: &str, r: &str| {
        let out = t.for_resource(g, r).to_storage(b"{}".to_vec()).unwrap();
        String::from_utf8_lossy(&out[..out.len().min(30)]).to_string()
    };
    assert!(prefix("", "secrets").starts_with("k8s:enc:aescbc:v1:a:"));
    assert!(prefix("apps", "deployments").starts_with("k8s:enc:aescbc:v1:b:"));
    assert_eq!(prefix("", "pods"), "{}");
    // An exact name wins over `*.*` even from a later entry, as upstream.
    assert!(prefix("", "configmaps").starts_with("k8s:enc:aescbc:v1:late:"));
}

#[test]
fn bad_configurations_say_what_is_wrong() {
    let cases: Vec<(String, &str)> = vec![
        ("apiVersion: v1\nkind: EncryptionConfig\nresources: []\n".into(), "expected apiVersion: apiserver.config.k8s.io/v1"),
        ("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n".into(), "resources: Required value"),
        ("{not yaml".into(), "parsing the EncryptionConfiguration"),
        ("\n".into(), "the encryption provider configuration file is empty"),
        ("apiVersion: apiserver.k8s.io/v1\nkind: EncryptionConfiguration\nresources: []\n".into(), "unexpected apiVersion/kind \"apiserver.k8s.io/v1/EncryptionConfiguration\""),
        (config(""), "resources[0].providers: Required value"),
        (config("  - aescbc:\n      keys:\n      - name: k\n        secret: '%%%'\n"), "secrets must be base64 encoded"),
        (config(&aescbc(&[("k", &[1; 10])])), "secret is not of the expected length, got 10, expected one of [16, 24, 32]"),
        (config(&format!("  - secretbox:\n      keys:\n      - name: k\n        secret: {}\n", b64(&[1; 16]))), "got 16, expected one of [32]"),
        (config("  - aescbc:\n      keys: []\n"), "at least one keys is required"),
        (config(&aescbc(&[("", &[1; 16])])), "name is a mandatory field"),
        (config("  - aesgcm:\n      keys: []\n"), "unsupported provider \"aesgcm\""),
        (config("  - kms:\n      name: x\n"), "unsupported provider \"kms\""),
        (config("  - {}\n"), "provider does not contain any of the expected providers"),
        (config(&format!("  - identity: {{}}\n    {}", aescbc(&[("k", &[1; 16])]).trim_start_matches("  - "))), "more than one provider"),
        (config("  - identity: {}\n").replace("[secrets]", "[sekrets]"), "resources[0].resources[0]: Invalid value: \"sekrets\": unknown resource"),
        (config("  - identity: {}\n").replace("[secrets]", "[Secrets]"), "should not contain capital letters"),
        (config("  - identity: {}\n").replace("[secrets]", "['*.nope.io']"), "unknown API group"),
        (config("  - identity: {}\n").replace("[secrets]", "[events.events.k8s.io]"), "Use 'events' instead"),
        (config("  - identity: {}\n").replace("[secrets]", "[secrets, '*.']"), "overlapping resources"),
        (config("  - identity: {}\n").replace("[secrets]", "[secrets, secrets]"), "cannot be specified multiple times"),
    ];
    for (text, expected) in cases {
        let err = error_of(&text);
        assert!(
            err.contains(expected),
            "{text}\n=> {err}\nexpected: {expected}"
        );
    }
    // The secret itself never appears in a message.
    let err = error_of(&config(&aescbc(&[("k", b"0123456789")])));
    assert!(!err.contains(&b64(b"0123456789")), "{err}");
}

#[test]
fn metrics_count_operations_by_prefix() {
    let t = Transformers::parse(&config(&aescbc(&[("key1", &[1; 32])]))).unwrap();
    let registry = prometheus::Registry::new();
    t.register(&registry).unwrap();
    let stored = secrets(&t).to_storage(b"{}".to_vec()).unwrap();
    secrets(&t).from_storage(&stored).unwrap();
    let _ = secrets(&t).from_storage(b"{}");
    let count = |labels: [&str; 3]| t.operations.with_label_values(&labels).get();
    assert_eq!(count(["to_storage", "k8s:enc:aescbc:v1:", "OK"]), 1);
    assert_eq!(count(["from_storage", "k8s:enc:aescbc:v1:", "OK"]), 1);
    assert_eq!(count(["from_storage", "unknown", "Unknown"]), 1);
}

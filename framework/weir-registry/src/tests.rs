use crate::*;

#[test]
fn debug_and_urls_hide_secrets() {
    let mut c = SchemaRegistryConfig::new("https://u:topsecret@sr:8081");
    c.basic_auth_user_info = Some("alice:hunter2".into());
    c.bearer_auth_token = Some("tok-123".into());
    let d = format!("{c:?}");
    for secret in ["topsecret", "hunter2", "tok-123"] {
        assert!(!d.contains(secret), "{secret} leaked: {d}");
    }
    assert!(d.contains("alice:***"), "{d}");
    let r = SchemaRegistry::from_config(c).build().unwrap();
    assert_eq!(r.url(), "https://***@sr:8081");
    assert!(!format!("{r:?}").contains("topsecret"));
}

#[test]
fn bad_config_is_a_clear_error() {
    let e = SchemaRegistry::builder("").build().unwrap_err();
    assert!(e.to_string().contains("WEIR_SCHEMA_REGISTRY_URL"), "{e}");
    let e = SchemaRegistry::builder("sr:8081").build().unwrap_err();
    assert!(e.to_string().contains("http://"), "{e}");
    let e = SchemaRegistry::builder("https://sr")
        .ca_certificate_pem(b"not a pem".to_vec())
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("CA certificate"), "{e}");
    let mut c = SchemaRegistryConfig::new("https://sr");
    c.ssl_certificate_location = Some("/nonexistent.pem".into());
    let e = SchemaRegistry::from_config(c).build().unwrap_err();
    assert!(e.to_string().contains("both"), "{e}");
}

use super::*;

const NOW: i64 = 1_790_000_000;

#[test]
fn node_certificate_carries_only_what_the_host_decides() {
    let ca = Ca::generate("test", NOW).unwrap();
    // The CSR asks to be the host; the issued certificate says node "gpu-01" anyway.
    let (_key, csr) = new_key_and_csr("host.river").unwrap();
    let pem = ca
        .issue_from_csr(&csr, &Subject::Node("gpu-01".into()), NOW, 3600)
        .unwrap();
    let info = inspect(&pem_to_der(&pem).unwrap()).unwrap();
    assert_eq!(info.subject, Some(Subject::Node("gpu-01".into())));
    assert_eq!(info.not_after, NOW + 3600);
    assert_eq!(info.not_before, NOW - BACKDATE_SECS);
    assert!(!info.is_ca);
}

#[test]
fn ca_round_trips_through_pem_and_keeps_its_fingerprint() {
    let ca = Ca::generate("test", NOW).unwrap();
    let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(ca.fingerprint(), again.fingerprint());
    assert!(inspect(ca.cert_der()).unwrap().is_ca);
    // A certificate issued by the reloaded CA names the same issuer.
    let (_k, csr) = new_key_and_csr("x").unwrap();
    again
        .issue_from_csr(&csr, &Subject::User("ann".into()), NOW, 60)
        .unwrap();
}

#[test]
fn serials_are_unique() {
    let ca = Ca::generate("test", NOW).unwrap();
    let (_k, csr) = new_key_and_csr("x").unwrap();
    let a =
        inspect(&pem_to_der(&ca.issue_from_csr(&csr, &Subject::Node("a".into()), NOW, 60).unwrap()).unwrap()).unwrap();
    let b =
        inspect(&pem_to_der(&ca.issue_from_csr(&csr, &Subject::Node("a".into()), NOW, 60).unwrap()).unwrap()).unwrap();
    assert_ne!(a.serial, b.serial);
}

#[test]
fn garbage_csr_is_an_error() {
    let ca = Ca::generate("test", NOW).unwrap();
    assert!(matches!(
        ca.issue_from_csr("nope", &Subject::Node("a".into()), NOW, 60),
        Err(PkiError::BadCsr(_))
    ));
    assert!(ca.issue_from_csr("", &Subject::Host, NOW, 60).is_err());
}

#[test]
fn subject_uris_refuse_bad_names() {
    assert_eq!(Subject::from_uri("river://node/a"), Some(Subject::Node("a".into())));
    assert_eq!(Subject::from_uri("river://user/../x"), None);
    assert_eq!(Subject::from_uri("river://admin/x"), None);
    assert_eq!(Subject::from_uri("https://host"), None);
}

#[test]
fn short_lived_certificates_renew_in_the_future() {
    let ca = Ca::generate("test", NOW).unwrap();
    let (_k, csr) = new_key_and_csr("x").unwrap();
    let pem = ca.issue_from_csr(&csr, &Subject::Node("a".into()), NOW, 20).unwrap();
    let info = inspect(&pem_to_der(&pem).unwrap()).unwrap();
    let at = renew_at(info.not_before, info.not_after);
    assert!(at > NOW + 10 && at < NOW + 20, "renews at now+{}", at - NOW);
}

#[test]
fn renewal_at_seventy_percent() {
    assert_eq!(renew_at(1000, 2000), 1700);
    assert_eq!(renew_at(0, 30 * 86400), 21 * 86400);
}

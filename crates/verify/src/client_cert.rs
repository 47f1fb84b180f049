//! Client certificates (RFC 8705): the one a connection presented, read for
//! its `x5t#S256` thumbprint, its subject DN and SANs and its public key;
//! the one a trusted front proxy passes in a header; and the rule that a
//! certificate-bound token (`cnf.x5t#S256`) is accepted only with the same
//! certificate.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use keyward_jose::crypto::{constant_time_eq, x5t_s256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::X509Name;

use crate::error::VerifyError;
use crate::identity::Identity;

/// A client certificate presented on a connection (or passed by a trusted
/// front proxy).
#[derive(Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    der: Vec<u8>,
    thumbprint: String,
    ca_verified: bool,
}

impl std::fmt::Debug for PeerCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCertificate")
            .field("x5t#S256", &self.thumbprint)
            .field("ca_verified", &self.ca_verified)
            .finish()
    }
}

/// The names a certificate is registered under (RFC 8705 §2.1.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertificateNames {
    /// The subject DN, as [`canonical_dn`] writes it.
    pub subject_dn: String,
    pub dns: Vec<String>,
    pub uri: Vec<String>,
    pub ip: Vec<IpAddr>,
    pub email: Vec<String>,
}

impl PeerCertificate {
    /// The end-entity certificate `der`; `ca_verified` when it chains to a
    /// configured client CA.
    pub fn new(der: Vec<u8>, ca_verified: bool) -> PeerCertificate {
        PeerCertificate {
            thumbprint: x5t_s256(&der),
            der,
            ca_verified,
        }
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Its `x5t#S256` thumbprint.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }

    /// Whether it chains to the listener's client CA.
    pub fn ca_verified(&self) -> bool {
        self.ca_verified
    }

    /// Its subject DN and subject alternative names; `None` when it does
    /// not parse.
    pub fn names(&self) -> Option<CertificateNames> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.der).ok()?;
        let mut names = CertificateNames {
            subject_dn: render_dn(cert.subject())?,
            ..CertificateNames::default()
        };
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::DNSName(d) => names.dns.push((*d).to_owned()),
                    GeneralName::URI(u) => names.uri.push((*u).to_owned()),
                    GeneralName::RFC822Name(e) => names.email.push((*e).to_owned()),
                    GeneralName::IPAddress(b) => {
                        if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                            names.ip.push(IpAddr::from(v4));
                        } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                            names.ip.push(IpAddr::from(v6));
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(names)
    }

    /// Its SubjectPublicKeyInfo, DER; `None` when it does not parse.
    pub fn public_key_info(&self) -> Option<Vec<u8>> {
        public_key_info(&self.der)
    }
}

/// The SubjectPublicKeyInfo (DER) of certificate `der`.
pub fn public_key_info(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.public_key().raw.to_vec())
}

/// Short names of the attribute types DNs use most (RFC 4514 §3 and the
/// usual additions); others are written as dotted OIDs.
const SHORT_NAMES: [(&str, &str); 11] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "STREET"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.5", "SERIALNUMBER"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "EMAILADDRESS"),
];

fn type_name(oid_or_name: &str) -> String {
    let upper = oid_or_name.to_ascii_uppercase();
    SHORT_NAMES
        .iter()
        .find(|(oid, short)| *oid == oid_or_name || *short == upper)
        .map_or(upper, |(_, short)| (*short).to_owned())
}

/// Escapes an attribute value per RFC 4514 §2.4.
fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, ch) in v.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(ch, '#' | ' '))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        if ch == '\0' {
            out.push_str("\\00");
        } else {
            out.push(ch);
        }
    }
    out
}

/// One RDN's attributes, sorted, joined with `+`; RDNs most specific
/// first (RFC 4514 order), joined with `,`.
fn join_dn(rdns: Vec<Vec<(String, String)>>) -> String {
    rdns.into_iter()
        .map(|mut rdn| {
            rdn.sort();
            rdn.into_iter()
                .map(|(t, v)| format!("{t}={}", escape(&v)))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn render_dn(name: &X509Name<'_>) -> Option<String> {
    let mut rdns = Vec::new();
    for rdn in name.iter_rdn() {
        let mut attrs = Vec::new();
        for a in rdn.iter() {
            let value = a.as_str().ok()?.to_owned();
            attrs.push((type_name(&a.attr_type().to_id_string()), value));
        }
        rdns.push(attrs);
    }
    rdns.reverse();
    Some(join_dn(rdns))
}

/// A DN written as RFC 4514 says (`CN=client,O=Example,C=DE`), in the one
/// form a certificate's subject is compared in: types as short names in
/// upper case (or dotted OIDs), spaces around separators dropped, values
/// escaped the one way. `None` when it is not a DN.
pub fn canonical_dn(text: &str) -> Option<String> {
    let mut rdns: Vec<Vec<(String, String)>> = vec![Vec::new()];
    let mut ty = String::new();
    let mut value = String::new();
    let mut in_value = false;
    let mut chars = text.chars().peekable();
    let end_attr = |rdns: &mut Vec<Vec<(String, String)>>, ty: &mut String, v: &mut String| {
        let t = ty.trim();
        let valid_type = !t.is_empty()
            && (t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                || t.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !valid_type || v.trim().is_empty() {
            return false;
        }
        let entry = (type_name(t), v.trim().to_owned());
        rdns.last_mut().expect("one rdn").push(entry);
        ty.clear();
        v.clear();
        true
    };
    while let Some(ch) = chars.next() {
        match ch {
            '\\' if in_value => {
                let a = chars.next()?;
                if a.is_ascii_hexdigit() {
                    let b = chars.next().filter(char::is_ascii_hexdigit)?;
                    let byte = u8::from_str_radix(&format!("{a}{b}"), 16).ok()?;
                    // Multi-byte UTF-8 escapes are not needed for the names
                    // registered here; refuse rather than guess.
                    if !byte.is_ascii() {
                        return None;
                    }
                    value.push(byte as char);
                } else {
                    value.push(a);
                }
            }
            '=' if !in_value => in_value = true,
            ',' | ';' | '+' if in_value => {
                if !end_attr(&mut rdns, &mut ty, &mut value) {
                    return None;
                }
                in_value = false;
                if ch != '+' {
                    rdns.push(Vec::new());
                }
            }
            '"' => return None,
            c if in_value => value.push(c),
            c => ty.push(c),
        }
    }
    if !in_value || !end_attr(&mut rdns, &mut ty, &mut value) {
        return None;
    }
    Some(join_dn(rdns))
}

/// Where a trusted front proxy that terminated TLS passes the client's
/// certificate: the certificate, PEM, URL-encoded (nginx's
/// `$ssl_client_escaped_cert`), in `header`, believed only from a peer
/// address in `trusted`.
#[derive(Clone, Debug)]
pub struct ForwardedCertificate {
    /// The header's name.
    pub header: http::HeaderName,
    /// The addresses it is accepted from.
    pub trusted: Vec<IpNet>,
}

impl ForwardedCertificate {
    /// Whether `peer` may pass a certificate.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        crate::forwarded::trusts(&self.trusted, peer)
    }

    /// The certificate the request's header carries, when `peer` is
    /// trusted (else the header is not read). `Err` when a trusted proxy
    /// sent something that is not one certificate.
    pub fn read(
        &self,
        headers: &http::HeaderMap,
        peer: IpAddr,
    ) -> Result<Option<Arc<PeerCertificate>>, VerifyError> {
        if !self.trusts(peer) {
            return Ok(None);
        }
        let mut values = headers.get_all(&self.header).iter();
        let (Some(v), None) = (values.next(), values.next()) else {
            return Ok(None);
        };
        decode_escaped_pem(v.as_bytes())
            .map(|der| Some(Arc::new(PeerCertificate::new(der, false))))
            .ok_or(VerifyError::CertificateHeader)
    }
}

/// One certificate from URL-encoded PEM; `None` for anything else.
pub fn decode_escaped_pem(value: &[u8]) -> Option<Vec<u8>> {
    if value.is_empty() {
        return None;
    }
    let pem: Vec<u8> = percent_encoding::percent_decode(value).collect();
    let mut certs = CertificateDer::pem_slice_iter(&pem);
    let first = certs.next()?.ok()?;
    // A client certificate, not a list of them.
    if certs.next().is_some() {
        return None;
    }
    x509_parser::parse_x509_certificate(&first).ok()?;
    Some(first.to_vec())
}

/// RFC 8705 §3: a token with `cnf.x5t#S256` is accepted only on a request
/// made with that certificate; with `required`, a token without one is
/// refused too.
pub fn check_binding(
    identity: &Identity,
    presented: Option<&PeerCertificate>,
    required: bool,
) -> Result<(), VerifyError> {
    match (&identity.cnf_x5t_s256, presented) {
        (Some(bound), Some(cert)) => {
            if constant_time_eq(bound.as_bytes(), cert.thumbprint.as_bytes()) {
                Ok(())
            } else {
                Err(VerifyError::CertificateMismatch)
            }
        }
        (Some(_), None) => Err(VerifyError::CertificateMissing),
        (None, _) if required => Err(VerifyError::NotCertificateBound),
        (None, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_are_compared_in_one_form() {
        assert_eq!(
            canonical_dn("cn=client one, o=Example\\, Inc.,C=DE").as_deref(),
            Some("CN=client one,O=Example\\, Inc.,C=DE")
        );
        assert_eq!(
            canonical_dn("2.5.4.3=a+OU=b;o=c").as_deref(),
            Some("CN=a+OU=b,O=c")
        );
        assert_eq!(canonical_dn("CN=a\\2cb").as_deref(), Some("CN=a\\,b"));
        for bad in [
            "", "CN", "CN=", "=x", "CN=a,", "CN=\"q\"", "C N=x", "CN=a\\",
        ] {
            assert_eq!(canonical_dn(bad), None, "{bad}");
        }
    }

    #[test]
    fn escaped_pem_is_one_certificate() {
        let ca = rcgen::generate_simple_self_signed(vec!["client.example".into()]).unwrap();
        let pem = ca.cert.pem();
        let escaped: String =
            percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        let der = decode_escaped_pem(escaped.as_bytes()).unwrap();
        assert_eq!(der, ca.cert.der().to_vec());
        let two = format!("{pem}{pem}");
        let escaped_two: String =
            percent_encoding::utf8_percent_encode(&two, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        for bad in [
            &b""[..],
            b"abc",
            escaped_two.as_bytes(),
            b"-----BEGIN CERTIFICATE-----%0AAAAA%0A-----END CERTIFICATE-----",
        ] {
            assert_eq!(decode_escaped_pem(bad), None);
        }
        let p = PeerCertificate::new(der, false);
        let names = p.names().unwrap();
        assert_eq!(names.dns, ["client.example"]);
        assert_eq!(names.subject_dn, "CN=rcgen self signed cert");
    }

    #[test]
    fn forwarded_certificates_only_from_trusted_addresses() {
        let f = ForwardedCertificate {
            header: http::HeaderName::from_static("x-client-cert"),
            trusted: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        };
        assert!(f.trusts("10.1.2.3".parse().unwrap()));
        assert!(f.trusts("::ffff:10.1.2.3".parse().unwrap()));
        assert!(f.trusts("::1".parse().unwrap()));
        assert!(!f.trusts("127.0.0.1".parse().unwrap()));
        let mut h = http::HeaderMap::new();
        h.insert("x-client-cert", http::HeaderValue::from_static("garbage"));
        assert_eq!(f.read(&h, "127.0.0.1".parse().unwrap()), Ok(None));
        assert_eq!(
            f.read(&h, "10.0.0.1".parse().unwrap()),
            Err(VerifyError::CertificateHeader)
        );
    }
}

//! Certificates and keys for one control plane: a throwaway CA, the API server's serving
//! certificate for 127.0.0.1, and the ServiceAccount token signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::Error;

/// Files written by [`generate`].
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// CA certificate (PEM); clients trust it.
    pub ca_cert: PathBuf,
    /// CA certificate as PEM text (for kubeconfig `certificate-authority-data`).
    pub ca_pem: String,
    /// The API server's serving certificate (PEM).
    pub serving_cert: PathBuf,
    /// The API server's serving key (PEM).
    pub serving_key: PathBuf,
    /// ServiceAccount token signing key (PEM, PKCS#8).
    pub sa_key: PathBuf,
    /// ServiceAccount token verification key (PEM).
    pub sa_pub: PathBuf,
}

#[allow(clippy::needless_pass_by_value)] // used as `map_err(cert_error)`
fn cert_error(e: rcgen::Error) -> Error {
    Error::Certs(e.to_string())
}

/// Generates the certificates and keys into `dir`.
pub fn generate(dir: &Path) -> Result<CertFiles, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pequod-testenv-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(cert_error)?)
        .map_err(cert_error)?;

    let names = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        // The `kubernetes` Service's cluster IP and names, for clients inside the cluster.
        "10.0.0.1".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ];
    let mut serving_params = CertificateParams::new(names).map_err(cert_error)?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let serving_key = KeyPair::generate().map_err(cert_error)?;
    let serving = serving_params
        .signed_by(&serving_key, &ca)
        .map_err(cert_error)?;

    let sa_key = KeyPair::generate().map_err(cert_error)?;

    let files = CertFiles {
        ca_cert: dir.join("ca.crt"),
        ca_pem: ca.pem(),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    write(&files.ca_cert, &files.ca_pem)?;
    write(&files.serving_cert, &serving.pem())?;
    write(&files.serving_key, &serving_key.serialize_pem())?;
    write(&files.sa_key, &sa_key.serialize_pem())?;
    write(&files.sa_pub, &sa_key.public_key_pem())?;
    Ok(files)
}

pub(crate) fn write(path: &Path, content: &str) -> Result<(), Error> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        context: path.display().to_string(),
        source,
    })
}

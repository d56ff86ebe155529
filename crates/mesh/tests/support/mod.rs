//! What the mesh's tests over real QUIC share: a fresh CA, a server endpoint with a host
//! certificate on loopback, and a client configured with a node certificate of the same CA.

use river_mesh::{client_config, client_endpoint, server_config, Identity, Trust};
use river_pki::{new_key_and_csr, Ca, Subject};

pub struct Endpoints {
    pub server: quinn::Endpoint,
    pub addr: std::net::SocketAddr,
    pub client: quinn::Endpoint,
    pub client_cfg: quinn::ClientConfig,
}

pub fn endpoints() -> Endpoints {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let ca = Ca::generate("t", now).unwrap();
    let host = ca.issue_host(&["127.0.0.1".into()], now, 3600).unwrap();
    let chain = format!("{}{}", host.cert_pem, ca.cert_pem());
    let server = quinn::Endpoint::server(
        server_config(Identity::from_pem(&chain, &host.key_pem).unwrap(), ca.cert_der()).unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let (key, csr) = new_key_and_csr("n").unwrap();
    let cert = ca.issue_from_csr(&csr, &Subject::Node("n".into()), now, 3600).unwrap();
    let client = client_endpoint(addr).unwrap();
    let client_cfg = client_config(
        Some(Identity::from_pem(&cert, &key).unwrap()),
        Trust::Ca(ca.cert_der().to_vec()),
    )
    .unwrap();
    Endpoints {
        server,
        addr,
        client,
        client_cfg,
    }
}

//! `MsgReader` over a real QUIC connection (our TLS and transport configs, loopback): a message
//! whose bytes arrive in pieces survives the reader's future being dropped midway, as a `select!`
//! branch that loses is.

use river_mesh::{client_config, client_endpoint, connect, server_config, Identity, MsgReader, Trust};
use river_pki::{new_key_and_csr, Ca, Subject};
use river_proto::msg::TermOut;
use std::time::Duration;

/// One stream on a fresh connection: the client's sending end and the server's receiving end,
/// and what must live as long as they do.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _alive: (quinn::Endpoint, quinn::Endpoint, quinn::Connection, quinn::Connection),
}

async fn stream() -> Stream {
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
    let accepted = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (_, recv) = conn.accept_bi().await.unwrap();
        (server, conn, recv)
    });
    let endpoint = client_endpoint(addr).unwrap();
    let cfg = client_config(
        Some(Identity::from_pem(&cert, &key).unwrap()),
        Trust::Ca(ca.cert_der().to_vec()),
    )
    .unwrap();
    let conn = connect(&endpoint, addr, cfg).await.unwrap();
    let (mut send, _) = conn.open_bi().await.unwrap();
    // A stream is announced to the peer by its first byte: a first whole message.
    send.write_all(&river_proto::frame::encode(&TermOut::Started).unwrap())
        .await
        .unwrap();
    let (server, server_conn, recv) = accepted.await.unwrap();
    Stream {
        send,
        recv,
        _alive: (server, endpoint, server_conn, conn),
    }
}

#[tokio::test]
async fn a_message_read_in_pieces_survives_a_dropped_read() {
    let Stream {
        mut send,
        mut recv,
        _alive,
    } = stream().await;
    let mut reader = MsgReader::new(&mut recv);
    assert_eq!(reader.next::<TermOut>().await.unwrap(), Some(TermOut::Started));

    let big = TermOut::Stdout((0..200_000u32).map(|i| (i % 251) as u8).collect());
    let bytes = river_proto::frame::encode(&big).unwrap();
    // The length prefix and part of the body, then a pause in which a read is given up.
    send.write_all(&bytes[..3]).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), reader.next::<TermOut>()).await;
    assert!(gave_up.is_err(), "a message was read from 3 of its bytes");
    send.write_all(&bytes[3..50_000]).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), reader.next::<TermOut>()).await;
    assert!(gave_up.is_err(), "a message was read from part of its body");
    send.write_all(&bytes[50_000..]).await.unwrap();
    send.write_all(&river_proto::frame::encode(&TermOut::Exit { code: 3 }).unwrap())
        .await
        .unwrap();
    send.finish().unwrap();
    assert_eq!(reader.next::<TermOut>().await.unwrap(), Some(big));
    assert_eq!(reader.next::<TermOut>().await.unwrap(), Some(TermOut::Exit { code: 3 }));
    assert_eq!(
        reader.next::<TermOut>().await.unwrap(),
        None,
        "a clean end between messages"
    );
}

#[tokio::test]
async fn a_stream_that_ends_inside_a_message_is_an_error() {
    let Stream {
        mut send,
        mut recv,
        _alive,
    } = stream().await;
    let mut reader = MsgReader::new(&mut recv);
    assert_eq!(reader.next::<TermOut>().await.unwrap(), Some(TermOut::Started));
    let bytes = river_proto::frame::encode(&TermOut::Stderr(vec![1; 100])).unwrap();
    send.write_all(&bytes[..40]).await.unwrap();
    send.finish().unwrap();
    assert!(reader.next::<TermOut>().await.is_err());
}

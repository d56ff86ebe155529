//! `MsgReader` over a real QUIC connection (our TLS and transport configs, loopback): a message
//! whose bytes arrive in pieces survives the reader's future being dropped midway, as a `select!`
//! branch that loses is.

mod support;

use river_mesh::{connect, MsgReader};
use river_proto::msg::TermOut;
use std::time::Duration;

/// One stream on a fresh connection, its first message (`Started`, which announces it) read:
/// the client's sending end, the server's receiving end, and what must live as long as they do.
struct Stream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _alive: (quinn::Endpoint, quinn::Endpoint, quinn::Connection, quinn::Connection),
}

async fn stream() -> Stream {
    let support::Endpoints {
        server,
        addr,
        client,
        client_cfg,
    } = support::endpoints();
    let accepted = tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (_, mut recv) = conn.accept_bi().await.unwrap();
        let first = river_mesh::recv_msg::<TermOut>(&mut recv).await.unwrap();
        assert_eq!(first, Some(TermOut::Started));
        (server, conn, recv)
    });
    let conn = connect(&client, addr, client_cfg).await.unwrap();
    let (mut send, _) = conn.open_bi().await.unwrap();
    send.write_all(&river_proto::frame::encode(&TermOut::Started).unwrap())
        .await
        .unwrap();
    let (server, server_conn, recv) = accepted.await.unwrap();
    Stream {
        send,
        recv,
        _alive: (server, client, server_conn, conn),
    }
}

#[tokio::test]
async fn a_message_read_in_pieces_survives_a_dropped_read() {
    let mut s = stream().await;
    let mut reader = MsgReader::new(&mut s.recv);

    let big = TermOut::Stdout((0..200_000u32).map(|i| (i % 251) as u8).collect());
    let bytes = river_proto::frame::encode(&big).unwrap();
    // The length prefix and part of the body, then a pause in which a read is given up.
    s.send.write_all(&bytes[..3]).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), reader.next::<TermOut>()).await;
    assert!(gave_up.is_err(), "a message was read from 3 of its bytes");
    s.send.write_all(&bytes[3..50_000]).await.unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(100), reader.next::<TermOut>()).await;
    assert!(gave_up.is_err(), "a message was read from part of its body");
    s.send.write_all(&bytes[50_000..]).await.unwrap();
    s.send
        .write_all(&river_proto::frame::encode(&TermOut::Exit { code: 3 }).unwrap())
        .await
        .unwrap();
    s.send.finish().unwrap();
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
    let mut s = stream().await;
    let mut reader = MsgReader::new(&mut s.recv);
    let bytes = river_proto::frame::encode(&TermOut::Stderr(vec![1; 100])).unwrap();
    s.send.write_all(&bytes[..40]).await.unwrap();
    s.send.finish().unwrap();
    assert!(reader.next::<TermOut>().await.is_err());
}

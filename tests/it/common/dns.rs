//! A DNS server for tests: answers A queries for one name with a list of IPv4
//! addresses that the test changes while it runs (TTL 1 s); anything else NXDOMAIN.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

pub struct TestDns {
    pub addr: std::net::SocketAddr,
    pub records: Arc<Mutex<Vec<Ipv4Addr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    pub async fn start(name: &str, ips: &[&str]) -> TestDns {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let records = Arc::new(Mutex::new(
            ips.iter()
                .map(|s| s.parse().unwrap())
                .collect::<Vec<Ipv4Addr>>(),
        ));
        let name = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))).unwrap();
        let recs = records.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut r = Message::new();
                r.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_op_code(q.op_code())
                    .set_authoritative(true)
                    .set_recursion_desired(q.recursion_desired())
                    .set_recursion_available(true);
                let mut found = false;
                for query in q.queries() {
                    r.add_query(query.clone());
                    if query
                        .name()
                        .to_ascii()
                        .eq_ignore_ascii_case(&name.to_ascii())
                    {
                        found = true;
                        if query.query_type() == RecordType::A {
                            for ip in recs.lock().unwrap().iter() {
                                r.add_answer(Record::from_rdata(name.clone(), 1, RData::A(A(*ip))));
                            }
                        }
                    }
                }
                if !found {
                    r.set_response_code(ResponseCode::NXDomain);
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        TestDns {
            addr,
            records,
            task,
        }
    }

    pub fn set(&self, ips: &[&str]) {
        *self.records.lock().unwrap() = ips.iter().map(|s| s.parse().unwrap()).collect();
    }
}

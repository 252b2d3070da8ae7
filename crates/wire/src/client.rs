//! The Calls client's websocket messages as a client sends them (reference
//! client-protocol.md): actions are `custom_com.mattermost.calls_<name>`, the `sdp`
//! action is a msgpack frame whose `data.data` is the zlib-compressed description.
//! Used by the load tool and the recorder, which join calls as clients do.

use std::io::Write;

/// The prefix of every Calls action and event name.
pub const PREFIX: &str = "custom_com.mattermost.calls_";

/// A JSON action frame: `{"action": PREFIX+name, "seq": seq, "data": data}`.
pub fn action(seq: i64, name: &str, data_json: &str) -> String {
    format!(
        "{{\"action\":\"{PREFIX}{name}\",\"seq\":{seq},\"data\":{}}}",
        if data_json.is_empty() {
            "{}"
        } else {
            data_json
        }
    )
}

/// The `sdp` action: msgpack `{action, seq, data: {data: zlib(description JSON)}}`.
pub fn sdp_frame(seq: i64, description_json: &str) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = z.write_all(description_json.as_bytes());
    let bytes = z.finish().unwrap_or_default();
    let v = rmpv::Value::Map(vec![
        ("action".into(), format!("{PREFIX}sdp").into()),
        ("seq".into(), seq.into()),
        (
            "data".into(),
            rmpv::Value::Map(vec![("data".into(), rmpv::Value::Binary(bytes))]),
        ),
    ]);
    let mut buf = Vec::new();
    let _ = rmpv::encode::write_value(&mut buf, &v);
    buf
}

/// The name of a Calls event (`custom_com.mattermost.calls_join` → `join`).
pub fn event_name(event: &str) -> Option<&str> {
    event.strip_prefix(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_back() {
        assert_eq!(
            action(3, "join", r#"{"channelID":"c"}"#),
            r#"{"action":"custom_com.mattermost.calls_join","seq":3,"data":{"channelID":"c"}}"#
        );
        assert_eq!(
            action(4, "leave", ""),
            r#"{"action":"custom_com.mattermost.calls_leave","seq":4,"data":{}}"#
        );
        let f = sdp_frame(2, r#"{"type":"offer"}"#);
        let v = rmpv::decode::read_value(&mut &f[..]).unwrap();
        let data = v["data"]["data"].as_slice().unwrap();
        let mut out = String::new();
        use std::io::Read;
        flate2::read::ZlibDecoder::new(data)
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, r#"{"type":"offer"}"#);
        assert_eq!(
            event_name("custom_com.mattermost.calls_signal"),
            Some("signal")
        );
        assert_eq!(event_name("posted"), None);
    }
}

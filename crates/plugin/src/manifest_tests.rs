//! The bundle's `plugin.json` against upstream's manifest facts (reference
//! calls-plugin.md §5.1, §5.1.1): the same settings in the same sections and order,
//! with upstream's labels, types and dropdown options, and defaults that are this
//! plugin's own (`Config::default`), so that a System Console renders it as
//! Mattermost renders upstream's.

use serde_json::Value;

use super::config::Config;

/// (section key, section title, setting key, label, type, dropdown options).
const FACTS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "GeneralSettings",
        "General Settings",
        "DefaultEnabled",
        "Test mode",
        "custom",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "MaxCallParticipants",
        "Max call participants",
        "number",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "AllowScreenSharing",
        "Allow screen sharing",
        "bool",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "EnableSimulcast",
        "Enable simulcast for screen sharing (Experimental)",
        "bool",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "EnableRinging",
        "Enable call ringing",
        "bool",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "EnableAV1",
        "Enable AV1 codec for screen sharing (Experimental)",
        "bool",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "EnableDCSignaling",
        "Use data channels for signaling (Experimental)",
        "bool",
        "",
    ),
    (
        "GeneralSettings",
        "General Settings",
        "EnableVideo",
        "Enable video calls in DMs (Experimental)",
        "bool",
        "",
    ),
    (
        "RTCDService",
        "RTCD Service",
        "RTCDServiceURL",
        "RTCD service URL",
        "text",
        "",
    ),
    (
        "RTCServer",
        "RTC Server",
        "UDPServerAddress",
        "RTC Server Address (UDP)",
        "text",
        "",
    ),
    (
        "RTCServer",
        "RTC Server",
        "TCPServerAddress",
        "RTC Server Address (TCP)",
        "text",
        "",
    ),
    (
        "RTCServer",
        "RTC Server",
        "UDPServerPort",
        "RTC Server Port (UDP)",
        "number",
        "",
    ),
    (
        "RTCServer",
        "RTC Server",
        "TCPServerPort",
        "RTC Server Port (TCP)",
        "number",
        "",
    ),
    (
        "RTCServer",
        "RTC Server",
        "EnableIPv6",
        "(Experimental) Enable IPv6 support",
        "bool",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "ICEHostOverride",
        "ICE Host Override",
        "text",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "ICEHostPortOverride",
        "ICE Host Port Override",
        "number",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "ICEServersConfigs",
        "ICE Servers Configurations",
        "longtext",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "TURNStaticAuthSecret",
        "TURN Static Auth Secret",
        "text",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "TURNCredentialsExpirationMinutes",
        "TURN Credentials Expiration (minutes)",
        "number",
        "",
    ),
    (
        "ICEAndTURN",
        "ICE and TURN",
        "ServerSideTURN",
        "Server Side TURN",
        "bool",
        "",
    ),
    (
        "CallRecordings",
        "Call recordings",
        "EnableRecordings",
        "Enable call recordings",
        "bool",
        "",
    ),
    (
        "CallRecordings",
        "Call recordings",
        "JobServiceURL",
        "Job service URL",
        "text",
        "",
    ),
    (
        "CallRecordings",
        "Call recordings",
        "MaxRecordingDuration",
        "Maximum call recording duration",
        "number",
        "",
    ),
    (
        "CallRecordings",
        "Call recordings",
        "RecordingQuality",
        "Call recording quality",
        "dropdown",
        "Low=low, Medium=medium, High=high",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "EnableTranscriptions",
        "Enable call transcriptions (Beta)",
        "bool",
        "",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "TranscribeAPI",
        "Call transcriber API",
        "dropdown",
        "Whisper.CPP=whisper.cpp, Azure AI=azure",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "TranscriberModelSize",
        "Call transcriber model size",
        "dropdown",
        "Tiny=tiny, Base=base, Small=small",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "TranscriberNumThreads",
        "Call transcriber threads",
        "number",
        "",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "TranscribeAPIAzureSpeechKey",
        "Azure API Key",
        "text",
        "",
    ),
    (
        "CallTranscriptions",
        "Call transcriptions",
        "TranscribeAPIAzureSpeechRegion",
        "Azure API Region",
        "text",
        "",
    ),
    (
        "CallLiveCaptions",
        "Live captions",
        "EnableLiveCaptions",
        "Enable live captions (Beta)",
        "bool",
        "",
    ),
    (
        "CallLiveCaptions",
        "Live captions",
        "LiveCaptionsModelSize",
        "Live captions: Model size",
        "dropdown",
        "Tiny=tiny, Base=base, Small=small",
    ),
    (
        "CallLiveCaptions",
        "Live captions",
        "LiveCaptionsNumTranscribers",
        "Live captions: Number of transcribers used per call",
        "number",
        "",
    ),
    (
        "CallLiveCaptions",
        "Live captions",
        "LiveCaptionsNumThreadsPerTranscriber",
        "Live captions: Number of threads per transcriber",
        "number",
        "",
    ),
    (
        "CallLiveCaptions",
        "Live captions",
        "LiveCaptionsLanguage",
        "Live captions language",
        "text",
        "",
    ),
];

/// Settings whose value an admin must not see again in clear.
/// Upstream's secret settings (the manifest's `"secret": true`): the plugin's own list.
const SECRETS: &[&str] = crate::config::SECRET_FIELDS;

#[test]
fn the_manifest_has_upstreams_sections_labels_types_and_our_defaults() {
    let m: Value = serde_json::from_str(include_str!("../../../plugin.json")).unwrap();
    let schema = &m["settings_schema"];
    assert_eq!(
        schema["settings"],
        serde_json::json!([]),
        "every setting is in a section"
    );
    let mut ours = Vec::new();
    for sec in schema["sections"].as_array().unwrap() {
        for s in sec["settings"].as_array().unwrap() {
            ours.push((sec, s));
        }
    }
    assert_eq!(ours.len(), FACTS.len(), "the same settings as upstream");
    let defaults = serde_json::to_value(Config::default()).unwrap();
    for ((sec, s), (sk, st, key, label, ty, options)) in ours.iter().zip(FACTS) {
        let ctx = key.to_string();
        assert_eq!(sec["key"], *sk, "{ctx}: section");
        assert_eq!(sec["title"], *st, "{ctx}: section title");
        assert_eq!(s["key"], *key, "in upstream's order");
        assert_eq!(s["display_name"], *label, "{ctx}: label");
        assert_eq!(s["type"], *ty, "{ctx}: type");
        let help = s["help_text"].as_str().unwrap_or_default();
        assert!(
            help.len() > 20 && !help.contains(key),
            "{ctx}: help text {help:?}"
        );
        let opts: Vec<String> = s["options"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                format!(
                    "{}={}",
                    o["display_name"].as_str().unwrap(),
                    o["value"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(opts.join(", "), *options, "{ctx}: options");
        assert_eq!(
            s["secret"].as_bool().unwrap_or(false),
            SECRETS.contains(key),
            "{ctx}: secret"
        );
        // The manifest's default is what the plugin uses when nothing is set.
        let ours = &defaults[*key];
        let declared = &s["default"];
        let same = match (key, declared) {
            // Stored as a JSON string in the settings, parsed by the plugin.
            (&"ICEServersConfigs", Value::String(t)) => {
                serde_json::from_str::<Value>(t).unwrap() == *ours
            }
            (_, Value::Null) => ours.is_null(),
            (_, d) => d == ours,
        };
        assert!(
            same,
            "{ctx}: manifest default {declared} but the plugin's is {ours}"
        );
    }
}

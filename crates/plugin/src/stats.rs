//! `CallsStats` (reference calls-plugin.md §1.4, §4.3) from the store's aggregates.

use std::collections::BTreeMap;

use chrono::{Datelike, TimeZone, Utc};
use serde_json::{json, Value};

use super::app::{App, Result};

fn day_key(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn month_key(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// The last 30 days and 12 months, prefilled with zero, counting `starts`.
fn by_day_and_month(
    starts: &[i64],
    now: chrono::DateTime<Utc>,
) -> (BTreeMap<String, i64>, BTreeMap<String, i64>) {
    let mut days: BTreeMap<String, i64> = (0..30)
        .map(|d| {
            (
                (now - chrono::Duration::days(d))
                    .format("%Y-%m-%d")
                    .to_string(),
                0,
            )
        })
        .collect();
    let mut months = BTreeMap::new();
    let (mut y, mut m) = (now.year(), now.month() as i32);
    for _ in 0..12 {
        months.insert(format!("{y:04}-{m:02}"), 0);
        m -= 1;
        if m == 0 {
            m = 12;
            y -= 1;
        }
    }
    for &s in starts {
        if let Some(v) = days.get_mut(&day_key(s)) {
            *v += 1;
        }
        if let Some(v) = months.get_mut(&month_key(s)) {
            *v += 1;
        }
    }
    (days, months)
}

pub async fn calls_stats(app: &App) -> Result<Value> {
    let s = app.store.stats().await?;
    let now = Utc::now();
    let (calls_by_day, calls_by_month) = by_day_and_month(&s.call_starts, now);
    let (rec_by_day, rec_by_month) = by_day_and_month(&s.recording_starts, now);
    let avg_participants = if s.participant_counts.is_empty() {
        0
    } else {
        (s.participant_counts.iter().sum::<i64>() as f64 / s.participant_counts.len() as f64)
            .round() as i64
    };
    let video: Vec<i64> = s
        .call_stats
        .iter()
        .filter(|c| c.video_duration > 0)
        .map(|c| c.video_duration)
        .collect();
    let total_video_duration: i64 = video.iter().sum();
    let avg_video_duration = if video.is_empty() {
        0
    } else {
        (total_video_duration as f64 / video.len() as f64).round() as i64
    };
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    for (channel_id, n) in app.store.completed_calls_by_channel().await? {
        let t = match app.host.channel(&channel_id).await? {
            Some(c) => c.r#type,
            None => continue,
        };
        *by_type.entry(t).or_default() += n;
    }
    Ok(json!({
        "total_calls": s.total_calls,
        "total_active_calls": s.total_active_calls,
        "total_active_sessions": s.total_active_sessions,
        "calls_by_day": calls_by_day,
        "calls_by_month": calls_by_month,
        "calls_by_channel_type": by_type,
        "avg_duration": s.avg_duration,
        "avg_participants": avg_participants,
        "avg_video_duration": avg_video_duration,
        "total_video_duration": total_video_duration,
        "total_video_calls": s.call_stats.iter().filter(|c| c.has_used_video).count(),
        "total_screen_share_calls": s.call_stats.iter().filter(|c| c.has_used_screen_share).count(),
        "recording_jobs_by_day": rec_by_day,
        "recording_jobs_by_month": rec_by_month,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefilled_windows_count_only_recent_starts() {
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 12, 0, 0).unwrap();
        let today = now.timestamp_millis();
        let old = Utc
            .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        let (days, months) = by_day_and_month(&[today, today, old], now);
        assert_eq!(days.len(), 30);
        assert_eq!(months.len(), 12);
        assert_eq!(days["2026-03-10"], 2);
        assert_eq!(months["2026-03"], 2);
        assert!(months.contains_key("2025-04"));
        assert!(!months.contains_key("2025-03"));
    }
}

//! `state.in-memory`: a map in the sidecar's memory, lost on restart, with Dapr's in-memory
//! semantics (UUID ETags; an ETag on a missing key is a mismatch; transactions check every
//! ETag before applying anything).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{
    Concurrency, DeleteRequest, SetRequest, StoreError, Stored, TxOperation, new_uuid_etag,
};
use bytes::Bytes;

struct Entry {
    data: Bytes,
    etag: String,
    expires: Option<(Instant, SystemTime)>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|(at, _)| at > now)
    }
}

#[derive(Default)]
pub struct MemoryStore {
    items: Mutex<HashMap<String, Entry>>,
    /// How many entries were written with a TTL: the sweep has nothing to do while 0, and
    /// a walk over a large map each second would stall the runtime for nothing.
    with_ttl: std::sync::atomic::AtomicUsize,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the map cannot leave an entry half-written: recover.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn get(&self, key: &str) -> Result<Option<Stored>, StoreError> {
        let now = Instant::now();
        let items = self.lock();
        Ok(items.get(key).filter(|e| e.live(now)).map(|e| {
            let mut metadata = Vec::new();
            if let Some((_, wall)) = e.expires {
                metadata.push(("ttlExpireTime".to_string(), rfc3339(wall)));
            }
            Stored {
                data: e.data.clone(),
                etag: Some(e.etag.clone()),
                metadata,
            }
        }))
    }

    fn check_set(
        items: &HashMap<String, Entry>,
        req: &SetRequest,
        now: Instant,
    ) -> Result<(), StoreError> {
        let current = items.get(&req.key).filter(|e| e.live(now));
        match (&req.etag, current) {
            (Some(etag), Some(e)) if *etag == e.etag => Ok(()),
            (Some(_), _) => Err(StoreError::EtagMismatch(format!("key {}", req.key))),
            (None, Some(_)) if req.concurrency == Concurrency::FirstWrite => Err(
                StoreError::EtagMismatch(format!("key {} already exists", req.key)),
            ),
            (None, _) => Ok(()),
        }
    }

    fn check_delete(
        items: &HashMap<String, Entry>,
        req: &DeleteRequest,
        now: Instant,
    ) -> Result<(), StoreError> {
        match (&req.etag, items.get(&req.key).filter(|e| e.live(now))) {
            (Some(etag), Some(e)) if *etag == e.etag => Ok(()),
            (Some(_), _) => Err(StoreError::EtagMismatch(format!("key {}", req.key))),
            (None, _) => Ok(()),
        }
    }

    fn apply_set(&self, items: &mut HashMap<String, Entry>, req: &SetRequest, now: Instant) {
        let expires = match req.ttl {
            Some(ttl) if ttl > 0 => {
                let d = Duration::from_secs(ttl as u64);
                Some((now + d, SystemTime::now() + d))
            }
            _ => None,
        };
        if expires.is_some() {
            self.with_ttl
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        items.insert(
            req.key.clone(),
            Entry {
                data: req.value.clone(),
                etag: new_uuid_etag(),
                expires,
            },
        );
    }

    pub fn set(&self, req: &SetRequest) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut items = self.lock();
        Self::check_set(&items, req, now)?;
        self.apply_set(&mut items, req, now);
        Ok(())
    }

    pub fn delete(&self, req: &DeleteRequest) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut items = self.lock();
        Self::check_delete(&items, req, now)?;
        items.remove(&req.key);
        Ok(())
    }

    pub fn multi(&self, ops: &[TxOperation]) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut items = self.lock();
        for op in ops {
            match op {
                TxOperation::Upsert(r) => Self::check_set(&items, r, now)?,
                TxOperation::Delete(r) => Self::check_delete(&items, r, now)?,
            }
        }
        for op in ops {
            match op {
                TxOperation::Upsert(r) => self.apply_set(&mut items, r, now),
                TxOperation::Delete(r) => {
                    items.remove(&r.key);
                }
            }
        }
        Ok(())
    }

    /// Drops expired entries; the sidecar calls it every second, as Dapr's store does.
    pub fn sweep(&self) {
        use std::sync::atomic::Ordering;
        if self.with_ttl.load(Ordering::Relaxed) == 0 {
            return;
        }
        let now = Instant::now();
        let mut items = self.lock();
        items.retain(|_, e| e.live(now));
        let left = items.values().filter(|e| e.expires.is_some()).count();
        self.with_ttl.store(left, Ordering::Relaxed);
    }
}

/// RFC 3339 in UTC, second precision, without a date-time crate.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(key: &str, etag: Option<&str>) -> SetRequest {
        SetRequest {
            key: key.into(),
            value: Bytes::from_static(b"1"),
            etag: etag.map(str::to_string),
            concurrency: Concurrency::Unspecified,
            ttl: None,
        }
    }

    #[test]
    fn etag_on_missing_key_is_a_mismatch() {
        let s = MemoryStore::new();
        assert!(matches!(
            s.set(&set("a", Some("x"))),
            Err(StoreError::EtagMismatch(_))
        ));
    }

    #[test]
    fn failed_transaction_applies_nothing() {
        let s = MemoryStore::new();
        s.set(&set("a", None)).unwrap();
        let ops = vec![
            TxOperation::Upsert(set("b", None)),
            TxOperation::Upsert(set("a", Some("stale"))),
        ];
        assert!(s.multi(&ops).is_err());
        assert!(s.get("b").unwrap().is_none());
    }

    #[test]
    fn rfc3339_formats_known_instant() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}

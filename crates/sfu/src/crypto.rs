//! The crypto provider every `Rtc` of ours uses: str0m's RustCrypto provider (dimpl's
//! DTLS, no system OpenSSL to install or link) for DTLS, fingerprints, AES-CM SRTP and
//! key derivation, with SRTP AEAD (AES-GCM, what browsers negotiate first) and STUN's
//! HMAC-SHA1 on our own RustCrypto `aes-gcm` and `hmac` instances. Each forwarded packet
//! is encrypted once per subscriber and every STUN consent check is verified and
//! answered with an HMAC, so those two keep their key schedules made once per session
//! (`scripts/forward-instructions.sh` counts what a forwarded packet costs).
//!
//! The DTLS part is str0m's, wrapped so that the SRTP keying material a session's
//! handshake exports is also handed to that session's [`KeySlot`]: the SFU seals the
//! audio it forwards itself (`egress`), with the keys str0m derives its own from.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce, Tag};
use hmac::{Hmac, Mac};
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
    SrtpProfile,
};
use str0m::crypto::{
    AeadAes128GcmCipher, AeadAes256GcmCipher, CryptoError, CryptoProvider, Sha1HmacProvider,
    SrtpProvider, SupportedAeadAes128Gcm, SupportedAeadAes256Gcm, SupportedAes128CmSha1_80,
};

/// The shared provider (built once: its parts are `'static`).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let base = str0m_provider();
            let srtp: &'static GcmSrtp = Box::leak(Box::new(GcmSrtp {
                base: base.srtp_provider,
            }));
            let dtls: &'static CapturingDtls = Box::leak(Box::new(CapturingDtls {
                base: base.dtls_provider,
            }));
            Arc::new(CryptoProvider {
                srtp_provider: srtp,
                sha1_hmac_provider: &StunHmac,
                dtls_provider: dtls,
                ..base
            })
        })
        .clone()
}

fn str0m_provider() -> CryptoProvider {
    str0m::crypto::from_feature_flags()
}

/// What one session's DTLS handshake exported for SRTP (RFC 5764 §4.2), once it has.
#[derive(Default)]
pub struct KeySlot {
    /// Our DTLS role: the client's keys are the left half of the material.
    active: AtomicBool,
    keys: OnceLock<(SrtpProfile, Vec<u8>)>,
}

impl std::fmt::Debug for KeySlot {
    // Never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeySlot")
    }
}

impl KeySlot {
    /// (profile, keying material, we are the DTLS client), after the handshake.
    pub fn get(&self) -> Option<(SrtpProfile, &[u8], bool)> {
        let (profile, material) = self.keys.get()?;
        Some((*profile, material, self.active.load(Ordering::Relaxed)))
    }
}

thread_local! {
    /// The slot the next DTLS instance created on this thread reports to.
    static ARMED: RefCell<Option<Arc<KeySlot>>> = const { RefCell::new(None) };
}

/// Runs `build` (which creates one `Rtc`, and with it its one DTLS instance,
/// synchronously) so that the instance reports its keys to the returned slot.
pub fn capturing_keys<T>(build: impl FnOnce() -> T) -> (T, Arc<KeySlot>) {
    let slot = Arc::new(KeySlot::default());
    ARMED.with(|a| *a.borrow_mut() = Some(slot.clone()));
    let built = build();
    // Disarmed whatever happened: a later Rtc must not report into this slot.
    ARMED.with(|a| a.borrow_mut().take());
    (built, slot)
}

/// str0m's DTLS, each instance tied to the slot armed when it was made (if any).
#[derive(Debug)]
struct CapturingDtls {
    base: &'static dyn DtlsProvider,
}

impl DtlsProvider for CapturingDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.base.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.base.new_dtls(cert, now, dtls_version, mtu)?;
        match ARMED.with(|a| a.borrow_mut().take()) {
            Some(slot) => Ok(Box::new(CapturingInstance {
                inner,
                slot,
                idle: None,
            })),
            None => Ok(inner),
        }
    }

    fn is_test(&self) -> bool {
        self.base.is_test()
    }
}

#[derive(Debug)]
struct CapturingInstance {
    inner: Box<dyn DtlsInstance>,
    slot: Arc<KeySlot>,
    /// After the handshake, the timeout the inner instance last answered a poll with,
    /// while nothing was given to it since. str0m polls DTLS on every `poll_output`
    /// (before any media event), hundreds of thousands of times a second for nothing
    /// on a busy SFU; the instance only changes through its inputs, so until the next
    /// one the answer stays the same.
    idle: Option<Instant>,
}

impl DtlsInstance for CapturingInstance {
    fn set_active(&mut self, active: bool) {
        self.idle = None;
        self.slot.active.store(active, Ordering::Relaxed);
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.idle = None;
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        if let Some(t) = self.idle {
            return DtlsOutput::Timeout(t);
        }
        let out = self.inner.poll_output(buf);
        match &out {
            DtlsOutput::KeyingMaterial(material, profile) => {
                let _ = self.slot.keys.set((*profile, material.to_vec()));
            }
            // Only after the handshake (the keys are in the slot): while it runs, a
            // poll may hand out a retransmission timer once and an idle timeout after.
            DtlsOutput::Timeout(t) if self.slot.keys.get().is_some() => self.idle = Some(*t),
            _ => {}
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.idle = None;
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<(), DtlsImplError> {
        self.idle = None;
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.idle = None;
        self.inner.close()
    }
}

/// STUN message integrity (RFC 5389): HMAC-SHA1 over the message parts.
#[derive(Debug)]
struct StunHmac;

impl Sha1HmacProvider for StunHmac {
    fn sha1_hmac(&self, key: &[u8], payloads: &[&[u8]]) -> [u8; 20] {
        // HMAC takes keys of any length: this cannot fail.
        let Ok(mut mac) = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key) else {
            return [0; 20];
        };
        for p in payloads {
            mac.update(p);
        }
        mac.finalize().into_bytes().into()
    }
}

#[derive(Debug)]
struct GcmSrtp {
    /// str0m's provider, for what is not per-packet AEAD.
    base: &'static dyn SrtpProvider,
}

impl SrtpProvider for GcmSrtp {
    fn aes_128_cm_sha1_80(&self) -> &'static dyn SupportedAes128CmSha1_80 {
        self.base.aes_128_cm_sha1_80()
    }

    fn aead_aes_128_gcm(&self) -> &'static dyn SupportedAeadAes128Gcm {
        &Gcm128Factory
    }

    fn aead_aes_256_gcm(&self) -> &'static dyn SupportedAeadAes256Gcm {
        &Gcm256Factory
    }

    fn srtp_aes_128_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        self.base.srtp_aes_128_ecb_round(key, input, output)
    }

    fn srtp_aes_256_ecb_round(&self, key: &[u8], input: &[u8], output: &mut [u8]) {
        self.base.srtp_aes_256_ecb_round(key, input, output)
    }
}

#[derive(Debug)]
struct Gcm128Factory;
#[derive(Debug)]
struct Gcm256Factory;

impl SupportedAeadAes128Gcm for Gcm128Factory {
    fn create_cipher(&self, key: [u8; 16], _encrypt: bool) -> Box<dyn AeadAes128GcmCipher> {
        Box::new(Gcm {
            aead: Aes128Gcm::new(&key.into()),
            aad: Vec::new(),
        })
    }
}

impl SupportedAeadAes256Gcm for Gcm256Factory {
    fn create_cipher(&self, key: [u8; 32], _encrypt: bool) -> Box<dyn AeadAes256GcmCipher> {
        Box::new(Gcm {
            aead: Aes256Gcm::new(&key.into()),
            aad: Vec::new(),
        })
    }
}

/// One direction's AEAD state. The key schedule is computed once, when str0m creates
/// the cipher from the DTLS keying material.
struct Gcm<A> {
    aead: A,
    /// Joins the additional data str0m passes in parts (decrypt), reused.
    aad: Vec<u8>,
}

impl<A> std::fmt::Debug for Gcm<A> {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gcm")
    }
}

const TAG_LEN: usize = 16;

impl<A: AeadInPlace> Gcm<A> {
    /// `output` receives the ciphertext followed by the tag.
    fn seal(
        &mut self,
        iv: &[u8; 12],
        aad: &[u8],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), CryptoError> {
        let n = input.len();
        if output.len() < n + TAG_LEN {
            return Err(CryptoError::Other("srtp output buffer too small".into()));
        }
        output[..n].copy_from_slice(input);
        let tag = self
            .aead
            .encrypt_in_place_detached(Nonce::from_slice(iv), aad, &mut output[..n])
            .map_err(|_| CryptoError::Other("aes-gcm encrypt".into()))?;
        output[n..n + TAG_LEN].copy_from_slice(&tag);
        Ok(())
    }

    /// `input` is the ciphertext followed by the tag; returns the plaintext length.
    fn open(
        &mut self,
        iv: &[u8; 12],
        aads: &[&[u8]],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<usize, CryptoError> {
        let Some(n) = input.len().checked_sub(TAG_LEN) else {
            return Err(CryptoError::Other(
                "srtp packet shorter than its tag".into(),
            ));
        };
        if output.len() < n {
            return Err(CryptoError::Other("srtp output buffer too small".into()));
        }
        let (text, tag) = input.split_at(n);
        let aad: &[u8] = match aads {
            [one] => one,
            parts => {
                self.aad.clear();
                for p in parts {
                    self.aad.extend_from_slice(p);
                }
                &self.aad
            }
        };
        output[..n].copy_from_slice(text);
        self.aead
            .decrypt_in_place_detached(
                Nonce::from_slice(iv),
                aad,
                &mut output[..n],
                Tag::from_slice(tag),
            )
            .map_err(|_| CryptoError::Other("srtp authentication failed".into()))?;
        Ok(n)
    }
}

/// str0m has one trait per key size with the same methods.
macro_rules! aead_cipher {
    ($trait:ident, $aead:ty) => {
        impl $trait for Gcm<$aead> {
            fn encrypt(
                &mut self,
                iv: &[u8; 12],
                aad: &[u8],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<(), CryptoError> {
                self.seal(iv, aad, input, output)
            }

            fn decrypt(
                &mut self,
                iv: &[u8; 12],
                aads: &[&[u8]],
                input: &[u8],
                output: &mut [u8],
            ) -> Result<usize, CryptoError> {
                self.open(iv, aads, input, output)
            }
        }
    };
}

aead_cipher!(AeadAes128GcmCipher, Aes128Gcm);
aead_cipher!(AeadAes256GcmCipher, Aes256Gcm);

#[cfg(test)]
// Tests start their own clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use str0m::crypto::dtls::KeyingMaterial;

    /// A DTLS instance that hands out keying material at its first poll if told to,
    /// and a timeout at every other, counting the polls that reach it.
    #[derive(Debug)]
    struct Scripted {
        polls: Arc<AtomicUsize>,
        keys_first: bool,
        at: Instant,
    }

    impl DtlsInstance for Scripted {
        fn set_active(&mut self, _: bool) {}
        fn handle_packet(&mut self, _: &[u8]) -> Result<(), DtlsImplError> {
            Ok(())
        }
        fn poll_output<'a>(&mut self, _: &'a mut [u8]) -> DtlsOutput<'a> {
            let n = self.polls.fetch_add(1, Ordering::Relaxed);
            if self.keys_first && n == 0 {
                return DtlsOutput::KeyingMaterial(
                    KeyingMaterial::new(&[1; 60]),
                    SrtpProfile::AEAD_AES_128_GCM,
                );
            }
            DtlsOutput::Timeout(self.at)
        }
        fn handle_timeout(&mut self, _: Instant) -> Result<(), DtlsImplError> {
            Ok(())
        }
        fn send_application_data(&mut self, _: &[u8]) -> Result<(), DtlsImplError> {
            Ok(())
        }
        fn is_active(&self) -> bool {
            false
        }
        fn protocol_version(&self) -> Option<ProtocolVersion> {
            None
        }
        fn close(&mut self) -> Result<(), DtlsImplError> {
            Ok(())
        }
    }

    fn capturing(keys_first: bool) -> (CapturingInstance, Arc<AtomicUsize>, Instant) {
        let polls = Arc::new(AtomicUsize::new(0));
        let at = Instant::now() + std::time::Duration::from_secs(5);
        let inner = Box::new(Scripted {
            polls: polls.clone(),
            keys_first,
            at,
        });
        let c = CapturingInstance {
            inner,
            slot: Arc::new(KeySlot::default()),
            idle: None,
        };
        (c, polls, at)
    }

    fn timeout(d: DtlsOutput<'_>) -> Option<Instant> {
        match d {
            DtlsOutput::Timeout(t) => Some(t),
            _ => None,
        }
    }

    /// After the handshake, a poll with no input since the last one is answered from
    /// that answer; any input sends the next poll to the instance again. During the
    /// handshake every poll reaches it.
    #[test]
    fn idle_dtls_polls_after_the_handshake_do_not_reach_the_instance() {
        let mut buf = [0u8; 2048];
        let (mut c, polls, _) = capturing(false);
        c.poll_output(&mut buf);
        c.poll_output(&mut buf);
        assert_eq!(
            polls.load(Ordering::Relaxed),
            2,
            "no keys yet: every poll reaches it"
        );

        let (mut c, polls, at) = capturing(true);
        assert!(matches!(
            c.poll_output(&mut buf),
            DtlsOutput::KeyingMaterial(..)
        ));
        assert!(c.slot.get().is_some(), "the keys reached the slot");
        assert_eq!(timeout(c.poll_output(&mut buf)), Some(at));
        assert_eq!(timeout(c.poll_output(&mut buf)), Some(at));
        assert_eq!(timeout(c.poll_output(&mut buf)), Some(at));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        let inputs: [fn(&mut CapturingInstance); 4] = [
            |c| c.handle_packet(&[]).expect("packet"),
            |c| c.handle_timeout(Instant::now()).expect("timeout"),
            |c| c.send_application_data(b"x").expect("data"),
            |c| c.close().expect("close"),
        ];
        for (i, input) in inputs.iter().enumerate() {
            input(&mut c);
            assert_eq!(timeout(c.poll_output(&mut buf)), Some(at));
            assert_eq!(timeout(c.poll_output(&mut buf)), Some(at));
            assert_eq!(
                polls.load(Ordering::Relaxed),
                3 + i,
                "input {i}: one poll reached it"
            );
        }
    }

    const IV: [u8; 12] = [7; 12];
    const AAD: &[u8] = b"rtp header, 12+ bytes";

    fn ours() -> &'static dyn SrtpProvider {
        provider().srtp_provider
    }

    fn str0m() -> &'static dyn SrtpProvider {
        str0m_provider().srtp_provider
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    // The GCM specification's test cases 4 (AES-128) and 16 (AES-256): 60 bytes of
    // plaintext with 20 of additional data, what our SRTP sealing must produce
    // whichever implementation is under it.
    const GCM_IV: &str = "cafebabefacedbaddecaf888";
    const GCM_AAD: &str = "feedfacedeadbeeffeedfacedeadbeefabaddad2";
    const GCM_PLAIN: &str = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39";

    #[test]
    fn aes_gcm_gives_the_specifications_known_answers() {
        let (iv, aad, plain) = (hex(GCM_IV), hex(GCM_AAD), hex(GCM_PLAIN));
        let iv: [u8; 12] = iv.try_into().unwrap();
        let mut sealed = vec![0u8; plain.len() + TAG_LEN];
        let key: [u8; 16] = hex("feffe9928665731c6d6a8f9467308308").try_into().unwrap();
        ours()
            .aead_aes_128_gcm()
            .create_cipher(key, true)
            .encrypt(&iv, &aad, &plain, &mut sealed)
            .expect("encrypt");
        assert_eq!(
            sealed,
            hex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091\
                 5bc94fbc3221a5db94fae95ae7121a47")
        );
        let key: [u8; 32] = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
            .try_into()
            .unwrap();
        ours()
            .aead_aes_256_gcm()
            .create_cipher(key, true)
            .encrypt(&iv, &aad, &plain, &mut sealed)
            .expect("encrypt");
        assert_eq!(
            sealed,
            hex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662\
                 76fc6ece0f4e1768cddf8853bb2d551b")
        );
    }

    #[test]
    fn stun_hmac_gives_rfc_2202s_known_answer() {
        // RFC 2202, HMAC-SHA1 test case 2.
        let mac = provider()
            .sha1_hmac_provider
            .sha1_hmac(b"Jefe", &[b"what do ya ", b"want for nothing?"]);
        assert_eq!(
            mac.to_vec(),
            hex("effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        );
    }

    #[test]
    fn aes_256_gcm_matches_str0ms_both_ways_and_refuses_tampering() {
        let key = [42u8; 32];
        let plain = b"an opus frame of some length, not a multiple of sixteen";
        for (enc, dec) in [(ours(), str0m()), (str0m(), ours())] {
            let mut sealed = vec![0u8; plain.len() + TAG_LEN];
            enc.aead_aes_256_gcm()
                .create_cipher(key, true)
                .encrypt(&IV, AAD, plain, &mut sealed)
                .expect("encrypt");
            let mut opened = vec![0u8; plain.len()];
            let n = dec
                .aead_aes_256_gcm()
                .create_cipher(key, false)
                .decrypt(&IV, &[&AAD[..5], &AAD[5..]], &sealed, &mut opened)
                .expect("decrypt");
            assert_eq!(&opened[..n], plain);

            let mut tampered = sealed.clone();
            tampered[3] ^= 1;
            let r = dec.aead_aes_256_gcm().create_cipher(key, false).decrypt(
                &IV,
                &[AAD],
                &tampered,
                &mut opened,
            );
            assert!(r.is_err(), "a changed ciphertext must not authenticate");
        }
    }

    #[test]
    fn aes_128_gcm_matches_str0ms() {
        let key = [9u8; 16];
        let plain = b"rtcp compound";
        let mut sealed = vec![0u8; plain.len() + TAG_LEN];
        ours()
            .aead_aes_128_gcm()
            .create_cipher(key, true)
            .encrypt(&IV, AAD, plain, &mut sealed)
            .expect("encrypt");
        let mut opened = vec![0u8; plain.len()];
        let n = str0m()
            .aead_aes_128_gcm()
            .create_cipher(key, false)
            .decrypt(&IV, &[AAD], &sealed, &mut opened)
            .expect("decrypt");
        assert_eq!(&opened[..n], plain);
    }

    #[test]
    fn stun_hmac_matches_str0ms() {
        let base = str0m_provider();
        let ours = provider();
        for key in [&b"short"[..], &[0x5a; 100][..]] {
            let parts: [&[u8]; 2] = [b"binding request ", b"attributes"];
            assert_eq!(
                ours.sha1_hmac_provider.sha1_hmac(key, &parts),
                base.sha1_hmac_provider.sha1_hmac(key, &parts)
            );
        }
    }

    #[test]
    fn short_or_wrong_sized_input_is_an_error_not_a_panic() {
        let mut c = ours().aead_aes_256_gcm().create_cipher([1; 32], false);
        let mut out = [0u8; 64];
        assert!(c.decrypt(&IV, &[AAD], &[0u8; 5], &mut out).is_err());
        let mut e = ours().aead_aes_256_gcm().create_cipher([1; 32], true);
        assert!(e.encrypt(&IV, AAD, &[0u8; 60], &mut out).is_err());
    }
}

//! [`Idempotency`]: the service, and the path of a keyed request.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::{
    Fingerprint, IDEMPOTENT_REPLAYED, IdempotencyConfig, IdempotencyKey, ScopeExtractor, StoreKey,
    fingerprint::FingerprintHasher,
    future::ResponseFuture,
    handle::Stats,
    metrics::KeyOutcome,
    store::{Claim, Completion, LeaseToken, MemoryStore, Store, StoredResponse},
};
use crate::{
    FailurePolicy, Rejection, ResponseForRejection, StoreError,
    body::{Limited, RequestBody, ResponseBody, read_limited, to_bytes_limited},
    marker::StandIn,
};

const TARGET: &str = "bulwark::idempotency";

/// The service made by [`IdempotencyLayer`](super::IdempotencyLayer). See the
/// [module docs](super).
///
/// Cheap to clone when the inner service is: everything else sits behind an `Arc`.
#[must_use]
pub struct Idempotency<S, St, X, R> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<St, X, R>>,
}

/// Everything but the inner service, shared by clones and futures.
pub(crate) struct Shared<St, X, R> {
    pub(crate) store: St,
    pub(crate) scope: X,
    pub(crate) on_rejection: R,
    pub(crate) config: IdempotencyConfig,
    pub(crate) stats: Arc<Stats>,
    /// Claims made while the store fails, under [`FailurePolicy::Local`]; made on first use.
    pub(crate) local: std::sync::OnceLock<MemoryStore>,
}

crate::macros::define_inner_service_accessors!(Idempotency<S, St, X, R>);

impl<S: Clone, St, X, R> Clone for Idempotency<S, St, X, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, St: fmt::Debug, X, R> fmt::Debug for Idempotency<S, St, X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Idempotency")
            .field("inner", &self.inner)
            .field("store", &self.shared.store)
            .field("scope", &std::any::type_name::<X>())
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

type Answer<B> = Response<ResponseBody<B>>;

impl<S, St, X, R, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, X, R>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    St: Store,
    X: ScopeExtractor<ReqB>,
    R: ResponseForRejection,
    ReqB: Body + Send + 'static,
    ReqB::Error: fmt::Display + Send,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: fmt::Display + Send + Sync + 'static,
{
    type Response = Answer<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResB, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let config = &shared.config;
        if !config.applies(req.method(), req.uri().path()) {
            return ResponseFuture::inner(self.inner.call(req.map(RequestBody::new)));
        }
        let key = match IdempotencyKey::from_headers(req.headers()) {
            Ok(Some(key)) => key,
            Ok(None) if !config.require_key => {
                return ResponseFuture::inner(self.inner.call(req.map(RequestBody::new)));
            }
            Ok(None) => {
                return ResponseFuture::ready(reject(shared, Rejection::IdempotencyKeyMissing));
            }
            Err(reason) => {
                tracing::debug!(target: TARGET, %reason, "idempotency key refused");
                return ResponseFuture::ready(reject(shared, Rejection::IdempotencyKeyInvalid));
            }
        };
        let scope = shared.scope.extract(&req);
        let scope = scope.as_ref().map(AsRef::as_ref);
        let store_key = StoreKey::new(scope, &key);
        let hasher = FingerprintHasher::new(
            req.method(),
            req.uri(),
            req.headers(),
            &config.fingerprint_headers,
            scope,
        );
        // The body is read before the inner service is called, so the instance that was polled
        // ready moves into the future and a fresh clone stays behind.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::boxed(Box::pin(keyed(
            Arc::clone(shared),
            inner,
            req,
            key,
            store_key,
            hasher,
        )))
    }
}

fn reject<St, X, R: ResponseForRejection, B>(
    shared: &Shared<St, X, R>,
    rejection: Rejection,
) -> Answer<B> {
    rejection.into_response_with(&shared.on_rejection)
}

impl<St, X, R> Shared<St, X, R> {
    /// This instance's memory for claims made while the store fails.
    fn local(&self) -> MemoryStore {
        self.local.get_or_init(MemoryStore::new).clone()
    }
}

/// Logs a store failure and what the policy made of it.
fn store_failed<St: Store, X, R>(
    shared: &Shared<St, X, R>,
    key: StoreKey,
    error: &StoreError,
    then: &'static str,
) {
    tracing::warn!(
        target: TARGET,
        key = %key.short(),
        store = shared.store.name(),
        %error,
        then,
        "idempotency store failed",
    );
}

/// The store that holds a claim: the layer's, or this instance's memory when the layer's failed
/// under [`FailurePolicy::Local`].
#[derive(Clone)]
enum Holder<St> {
    Shared(St),
    Local(MemoryStore),
}

impl<St: Store> Store for Holder<St> {
    fn name(&self) -> &'static str {
        match self {
            Self::Shared(s) => s.name(),
            Self::Local(s) => s.name(),
        }
    }

    async fn claim(
        &self,
        key: StoreKey,
        fingerprint: Fingerprint,
        lease: Duration,
    ) -> Result<Claim, StoreError> {
        match self {
            Self::Shared(s) => s.claim(key, fingerprint, lease).await,
            Self::Local(s) => s.claim(key, fingerprint, lease).await,
        }
    }

    async fn complete(
        &self,
        key: StoreKey,
        token: LeaseToken,
        completion: Completion,
        retention: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Shared(s) => s.complete(key, token, completion, retention).await,
            Self::Local(s) => s.complete(key, token, completion, retention).await,
        }
    }

    async fn release(&self, key: StoreKey, token: LeaseToken) -> Result<bool, StoreError> {
        match self {
            Self::Shared(s) => s.release(key, token).await,
            Self::Local(s) => s.release(key, token).await,
        }
    }

    fn release_detached(&self, key: StoreKey, token: LeaseToken) {
        match self {
            Self::Shared(s) => s.release_detached(key, token),
            Self::Local(s) => s.release_detached(key, token),
        }
    }
}

/// Frees a claim if its request is dropped before it completed (the client went away).
struct ClaimGuard<St: Store> {
    store: St,
    key: StoreKey,
    token: LeaseToken,
    stats: Arc<Stats>,
    armed: bool,
    /// When the claim's lease ends (counted from just before the claim was sent, so never
    /// later than the store's own clock has it).
    lease_ends: Instant,
}

/// The first pause before a store write that failed is tried again; it doubles up to
/// [`RETRY_MAX_PAUSE`].
const RETRY_FIRST_PAUSE: Duration = Duration::from_millis(50);
const RETRY_MAX_PAUSE: Duration = Duration::from_secs(1);

impl<St: Store> Drop for ClaimGuard<St> {
    fn drop(&mut self) {
        if self.armed {
            tracing::debug!(
                target: TARGET,
                key = %self.key.short(),
                "request cancelled; releasing its idempotency claim",
            );
            self.stats.record(KeyOutcome::Released);
            self.store.release_detached(self.key, self.token);
        }
    }
}

impl<St: Store> ClaimGuard<St> {
    async fn release(mut self, why: &'static str) {
        self.armed = false;
        self.stats.record(KeyOutcome::Released);
        match self.store.release(self.key, self.token).await {
            Ok(released) => tracing::debug!(
                target: TARGET,
                key = %self.key.short(),
                why,
                released,
                "idempotency claim released",
            ),
            Err(error) => {
                self.stats.record(KeyOutcome::StoreError);
                tracing::warn!(
                    target: TARGET,
                    key = %self.key.short(),
                    why,
                    %error,
                    "idempotency claim not released yet; trying again until its lease ends",
                );
                self.retry_until_lease_ends("release", |store, key, token| async move {
                    store.release(key, token).await
                });
            }
        }
    }

    /// Tries a write that failed (`complete` or `release`, which are owner-checked, so doing
    /// one twice is harmless) again on a task of its own, with pauses from 50 ms doubling to
    /// 1 s, until it is done or the lease ends. A store that only stalled (a pause, a
    /// failover) then still records what happened: a completion lost to one timeout would
    /// let a retry after the lease run the request a second time.
    fn retry_until_lease_ends<F, Fut>(&self, what: &'static str, write: F)
    where
        F: Fn(St, StoreKey, LeaseToken) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<bool, StoreError>> + Send,
    {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the claim ends with its lease
        };
        let (store, key, token, until) =
            (self.store.clone(), self.key, self.token, self.lease_ends);
        rt.spawn(async move {
            let mut pause = RETRY_FIRST_PAUSE;
            loop {
                if Instant::now() + pause >= until {
                    tracing::warn!(
                        target: TARGET,
                        key = %key.short(),
                        what,
                        "idempotency store write not done before the lease ended; a retry of this key runs again",
                    );
                    return;
                }
                tokio::time::sleep(pause).await;
                match write(store.clone(), key, token).await {
                    // `false`: an earlier attempt that timed out had done it, or the lease
                    // is over; nothing more to do either way.
                    Ok(done) => {
                        tracing::debug!(target: TARGET, key = %key.short(), what, done, "idempotency store write retried");
                        return;
                    }
                    Err(_) => pause = (pause * 2).min(RETRY_MAX_PAUSE),
                }
            }
        });
    }

    async fn complete(mut self, completion: Completion, retention: Duration) {
        self.armed = false;
        match self
            .store
            .complete(self.key, self.token, completion.clone(), retention)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                self.stats.record(KeyOutcome::LeaseLost);
                tracing::warn!(
                    target: TARGET,
                    key = %self.key.short(),
                    "response not stored: the idempotency lease ended before the request completed",
                );
            }
            Err(error) => {
                self.stats.record(KeyOutcome::StoreError);
                tracing::warn!(
                    target: TARGET,
                    key = %self.key.short(),
                    %error,
                    "response not stored yet; trying again until the lease ends (retries get 409 meanwhile)",
                );
                self.retry_until_lease_ends("complete", move |store, key, token| {
                    let completion = completion.clone();
                    async move { store.complete(key, token, completion, retention).await }
                });
            }
        }
    }
}

async fn keyed<S, St, X, R, ReqB, ResB>(
    shared: Arc<Shared<St, X, R>>,
    mut inner: S,
    req: Request<ReqB>,
    key: IdempotencyKey,
    store_key: StoreKey,
    hasher: FingerprintHasher,
) -> Result<Answer<ResB>, S::Error>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>>,
    St: Store,
    R: ResponseForRejection,
    ReqB: Body,
    ReqB::Error: fmt::Display,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: fmt::Display + Send + Sync + 'static,
{
    let config = &shared.config;
    let (mut parts, body) = req.into_parts();
    let bytes = match to_bytes_limited(body, config.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::debug!(target: TARGET, key = %store_key.short(), %error, "request body not read");
            return Ok(reject(&shared, error.rejection()));
        }
    };
    let fingerprint = hasher.finish(&bytes);
    let mut wait_until = None;
    let (holder, token, claimed_at) = loop {
        let claimed_at = Instant::now();
        let (holder, claim) = match shared
            .store
            .claim(store_key, fingerprint, config.lease)
            .await
        {
            Ok(claim) => (Holder::Shared(shared.store.clone()), claim),
            Err(error) => match config.on_store_error {
                FailurePolicy::Local => {
                    shared.stats.record(KeyOutcome::StoreError);
                    store_failed(
                        &shared,
                        store_key,
                        &error,
                        "key claimed in this instance's memory (local)",
                    );
                    let local = shared.local();
                    match local.claim(store_key, fingerprint, config.lease).await {
                        Ok(claim) => (Holder::Local(local), claim),
                        Err(_) => {
                            return Ok(reject(
                                &shared,
                                Rejection::backend_unavailable(Duration::from_secs(1)),
                            ));
                        }
                    }
                }
                FailurePolicy::FailOpen => {
                    shared.stats.record(KeyOutcome::StoreError);
                    store_failed(
                        &shared,
                        store_key,
                        &error,
                        "request runs unprotected (fail open)",
                    );
                    parts.extensions.insert(key);
                    let req = Request::from_parts(parts, RequestBody::full(bytes));
                    let res = inner.call(req).await?;
                    return Ok(res.map(ResponseBody::new));
                }
                FailurePolicy::FailClosed => {
                    shared.stats.record(KeyOutcome::StoreError);
                    store_failed(&shared, store_key, &error, "request refused (fail closed)");
                    return Ok(reject(
                        &shared,
                        Rejection::backend_unavailable(Duration::from_secs(1)),
                    ));
                }
            },
        };
        let (Claim::InFlight { fingerprint: f, .. }
        | Claim::Completed { fingerprint: f, .. }
        | Claim::NotReplayable { fingerprint: f }) = &claim
        else {
            let Claim::Acquired(token) = claim else {
                unreachable!("every other claim is matched above")
            };
            break (holder, token, claimed_at);
        };
        if *f != fingerprint {
            shared.stats.record(KeyOutcome::Mismatch);
            tracing::info!(target: TARGET, key = %store_key.short(), "idempotency key reused with another request");
            return Ok(reject(&shared, Rejection::IdempotencyMismatch));
        }
        match claim {
            Claim::Completed { response, .. } => {
                shared.stats.record(KeyOutcome::Replayed);
                tracing::debug!(
                    target: TARGET,
                    key = %store_key.short(),
                    status = response.status.as_u16(),
                    "idempotent response replayed",
                );
                return Ok(replay(&response));
            }
            Claim::NotReplayable { .. } => {
                shared.stats.record(KeyOutcome::NotReplayable);
                return Ok(reject(&shared, Rejection::IdempotencyNotReplayable));
            }
            Claim::InFlight { lease_left, .. } => {
                if let Some(wait) = config.wait_for_in_flight {
                    let now = Instant::now();
                    let until = *wait_until.get_or_insert(now + wait);
                    if now < until {
                        let step = (until - now).min(Duration::from_millis(50));
                        tokio::time::sleep(step).await;
                        continue;
                    }
                }
                shared.stats.record(KeyOutcome::InFlight);
                tracing::debug!(target: TARGET, key = %store_key.short(), "idempotent request still in flight");
                let hint = config.in_flight_retry_after.min(lease_left);
                return Ok(reject(&shared, Rejection::idempotency_in_flight(hint)));
            }
            Claim::Acquired(_) => unreachable!("matched above"),
        }
    };

    shared.stats.record(KeyOutcome::New);
    tracing::debug!(target: TARGET, key = %store_key.short(), "idempotency key claimed");
    let mut guard = ClaimGuard {
        store: holder,
        key: store_key,
        token,
        stats: Arc::clone(&shared.stats),
        armed: config.release_on_cancel,
        lease_ends: claimed_at + config.lease,
    };
    parts.extensions.insert(key);
    let result = inner
        .call(Request::from_parts(parts, RequestBody::full(bytes)))
        .await;
    let res = match result {
        Ok(res) => res,
        Err(err) => {
            guard.release("error").await;
            return Err(err);
        }
    };
    // The handler answered: whatever it does is done. A client that goes away while the body
    // is read must not free the key for a retry to run it again (`release_on_cancel` is for
    // handlers cancelled before they answered); the claim then ends with its lease.
    guard.armed = false;
    // A rejection or a fallback answered instead of the handler (it failed, timed out, or its
    // circuit is open): storing that answer would replay a stand-in for the whole retention,
    // and the operation would never run for this key.
    let stand_in = match StandIn::of(res.extensions(), res.headers()) {
        Some(StandIn::Rejection) => Some("rejection"),
        Some(StandIn::Fallback) => Some("fallback answer"),
        Some(StandIn::Replay) | None => None,
    };
    if let Some(why) = stand_in.filter(|_| config.release_on_rejection) {
        guard.release(why).await;
        return Ok(res.map(ResponseBody::new));
    }
    if config.release_on_server_error && res.status().is_server_error() {
        guard.release("server error").await;
        return Ok(res.map(ResponseBody::new));
    }

    let (parts, body) = res.into_parts();
    match read_limited(body, config.max_response_bytes).await {
        Limited::Whole(bytes) => {
            let stored = StoredResponse::capture(&parts, bytes.clone());
            guard
                .complete(Completion::Response(Arc::new(stored)), config.retention)
                .await;
            Ok(Response::from_parts(parts, ResponseBody::full(bytes)))
        }
        Limited::TooLarge(prefix, rest) => {
            tracing::info!(
                target: TARGET,
                key = %store_key.short(),
                limit = config.max_response_bytes,
                "response too large to keep; the key is completed without replay",
            );
            guard.complete(Completion::TooLarge, config.retention).await;
            Ok(Response::from_parts(
                parts,
                ResponseBody::prefixed(prefix, rest),
            ))
        }
        Limited::WrongLength(prefix, rest) => {
            // Cut off (or longer than announced): not the response, so not stored; the key is
            // freed for a retry, and the client gets the body as it came, still announcing
            // its length, which its server frames as the broken answer it is.
            tracing::warn!(target: TARGET, key = %store_key.short(), received = prefix.len(), "response body did not match its announced length; not stored");
            guard.release("response body cut off").await;
            Ok(Response::from_parts(
                parts,
                ResponseBody::prefixed(prefix, rest),
            ))
        }
        Limited::Failed(prefix, error) => {
            // The body broke while it was read: the response is not stored and the key is
            // freed, so a retry runs again. The client gets what was read, then the error.
            tracing::warn!(target: TARGET, key = %store_key.short(), %error, "response body failed; not stored");
            guard.release("response body failed").await;
            Ok(Response::from_parts(
                parts,
                ResponseBody::failed(prefix, error),
            ))
        }
    }
}

/// The stored response, replayed exactly, marked `Idempotent-Replayed: true`.
fn replay<B>(stored: &StoredResponse) -> Answer<B> {
    let mut res = stored.replay();
    res.headers_mut()
        .insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    res
}

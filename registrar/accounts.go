// Package registrar owns identities and reachability: accounts with their
// credentials (HA1 digests), and the location service that maps each
// address-of-record to the contacts registered for it (RFC 3261 section 10).
// It does not send SIP itself; sipserver drives it.
package registrar

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Errors of the account store and service.
var (
	ErrNoAccount      = errors.New("no such account")
	ErrAccountExists  = errors.New("account already exists")
	ErrBadCredentials = errors.New("wrong login or password")
	ErrBadPassword    = errors.New("unacceptable password")
	// ErrUnavailable: the store cannot serve the request now (the database
	// is down or cannot be written); the request may succeed later. The
	// store marks its errors with it.
	ErrUnavailable = errors.New("storage unavailable")
)

// Digest algorithms for which an HA1 is kept (RFC 8760).
const (
	MD5    = "MD5"
	SHA256 = "SHA-256"
)

// Account is a SIP account. The password itself is never kept: only the HA1
// digests for the realm, which serve both SIP digest and HTTP basic auth.
type Account struct {
	Login       string
	DisplayName string
	Realm       string
	HA1MD5      string
	HA1SHA256   string
	Created     time.Time
	Updated     time.Time
}

// HA1 returns the digest of the algorithm for the account, "" if unknown.
func (a Account) HA1(algorithm string) string {
	switch strings.ToUpper(algorithm) {
	case "", MD5, MD5 + "-SESS":
		return a.HA1MD5
	case SHA256, SHA256 + "-SESS":
		return a.HA1SHA256
	}
	return ""
}

// AccountStore keeps accounts.
type AccountStore interface {
	// Account returns ErrNoAccount when there is none.
	Account(ctx context.Context, login string) (Account, error)
	// CreateAccount returns ErrAccountExists for a login already taken.
	CreateAccount(ctx context.Context, a Account) error
	// UpdateAccount returns ErrNoAccount when there is none.
	UpdateAccount(ctx context.Context, a Account) error
	// DeleteAccount returns ErrNoAccount when there is none.
	DeleteAccount(ctx context.Context, login string) error
	Accounts(ctx context.Context) ([]Account, error)
	// PutAccounts adds or replaces accounts in one transaction: all or none.
	PutAccounts(ctx context.Context, accounts []Account) (added, updated int, err error)
}

// HashHA1 computes the HA1 of RFC 2617/8760: H(username:realm:password),
// lower-case hex.
func HashHA1(algorithm, login, realm, password string) string {
	in := login + ":" + realm + ":" + password
	if strings.EqualFold(algorithm, SHA256) {
		sum := sha256.Sum256([]byte(in))
		return hex.EncodeToString(sum[:])
	}
	sum := md5.Sum([]byte(in))
	return hex.EncodeToString(sum[:])
}

// Accounts manages accounts for one realm.
type Accounts struct {
	store AccountStore
	realm string
	now   func() time.Time
	cache *accountCache
}

// AccountsOption configures Accounts.
type AccountsOption func(*Accounts)

// WithLookupCache keeps accounts read for authentication in memory for
// ttl. Every REGISTER, proxied request and API call looks its account up;
// the cache spares the database those reads. Logins found not to exist
// are kept too (at most maxNegative of them), so that an unknown login
// costs what a known one does: one database read per ttl, then none; a
// guesser cannot tell by timing which logins exist. Changes made through
// this Accounts take effect at once; changes made by another process (the
// accounts CLI, another node) within ttl.
func WithLookupCache(ttl time.Duration) AccountsOption {
	return func(a *Accounts) {
		if ttl > 0 {
			a.cache = &accountCache{ttl: ttl, entries: map[string]cachedAccount{}}
		}
	}
}

// NewAccounts returns the account service of realm (the SIP domain).
func NewAccounts(store AccountStore, realm string, opts ...AccountsOption) *Accounts {
	a := &Accounts{store: store, realm: realm, now: time.Now}
	for _, o := range opts {
		o(a)
	}
	return a
}

// CheckPassword rejects passwords that cannot be typed into a phone's
// settings or that would break a one-line import.
func CheckPassword(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrBadPassword)
	case len(p) > 128:
		return fmt.Errorf("%w: longer than 128 bytes", ErrBadPassword)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w: not UTF-8", ErrBadPassword)
	case strings.ContainsAny(p, "\r\n\x00"):
		return fmt.Errorf("%w: contains a line break or NUL", ErrBadPassword)
	}
	return nil
}

// New builds an account with the HA1 digests of password.
func (a *Accounts) New(login, password, displayName string) (Account, error) {
	if err := CheckPassword(password); err != nil {
		return Account{}, err
	}
	now := a.now().UTC().Truncate(time.Microsecond)
	return Account{
		Login: login, DisplayName: displayName, Realm: a.realm,
		HA1MD5:    HashHA1(MD5, login, a.realm, password),
		HA1SHA256: HashHA1(SHA256, login, a.realm, password),
		Created:   now, Updated: now,
	}, nil
}

// Add creates an account.
func (a *Accounts) Add(ctx context.Context, login, password, displayName string) error {
	acc, err := a.New(login, password, displayName)
	if err != nil {
		return err
	}
	defer a.cache.forget(login) // it may be cached as unknown
	return a.store.CreateAccount(ctx, acc)
}

// SetPassword replaces an account's credentials.
func (a *Accounts) SetPassword(ctx context.Context, login, password string) error {
	old, err := a.store.Account(ctx, login)
	if err != nil {
		return err
	}
	acc, err := a.New(login, password, old.DisplayName)
	if err != nil {
		return err
	}
	acc.Created = old.Created
	defer a.cache.forget(login)
	return a.store.UpdateAccount(ctx, acc)
}

// Delete removes an account.
func (a *Accounts) Delete(ctx context.Context, login string) error {
	defer a.cache.forget(login)
	return a.store.DeleteAccount(ctx, login)
}

// List returns every account ordered by login.
func (a *Accounts) List(ctx context.Context) ([]Account, error) {
	return a.store.Accounts(ctx)
}

// Lookup returns an account, from the lookup cache when it holds it.
func (a *Accounts) Lookup(ctx context.Context, login string) (Account, error) {
	now := a.now()
	if acc, ok := a.cache.get(login, now); ok {
		return acc, nil
	}
	if a.cache.unknown(login, now) {
		return Account{}, ErrNoAccount
	}
	acc, err := a.store.Account(ctx, login)
	if errors.Is(err, ErrNoAccount) {
		a.cache.putUnknown(login, now)
	}
	if err != nil {
		return Account{}, err
	}
	a.cache.put(acc, now)
	return acc, nil
}

// Import adds or replaces accounts in one transaction.
func (a *Accounts) Import(ctx context.Context, accounts []Account) (added, updated int, err error) {
	defer a.cache.clear()
	return a.store.PutAccounts(ctx, accounts)
}

// dummy is compared against when the login does not exist, so that an
// unknown login takes as long to refuse as a wrong password.
var dummy = strings.Repeat("0", 32)

// Authenticate checks a login and plain password (HTTP basic auth) by hashing
// the password as the stored HA1 was and comparing in constant time. Unknown
// login and wrong password both give ErrBadCredentials.
func (a *Accounts) Authenticate(ctx context.Context, login, password string) (Account, error) {
	acc, err := a.Lookup(ctx, login)
	switch {
	case errors.Is(err, ErrNoAccount):
		subtle.ConstantTimeCompare([]byte(HashHA1(MD5, login, a.realm, password)), []byte(dummy))
		return Account{}, ErrBadCredentials
	case err != nil:
		return Account{}, err
	}
	got := HashHA1(MD5, login, a.realm, password)
	if acc.Realm != a.realm || subtle.ConstantTimeCompare([]byte(got), []byte(acc.HA1MD5)) != 1 {
		return Account{}, ErrBadCredentials
	}
	return acc, nil
}

// accountCache holds looked-up accounts, and logins that do not exist,
// for a short time. A nil cache holds nothing.
type accountCache struct {
	ttl time.Duration

	mu        sync.Mutex
	entries   map[string]cachedAccount
	negative  map[string]time.Time // unknown login: until when it is known unknown
	nextSweep time.Time
}

// maxNegative bounds the unknown logins remembered: a scanner trying new
// names replaces old ones rather than growing the map.
const maxNegative = 16384

type cachedAccount struct {
	acc   Account
	until time.Time
}

func (c *accountCache) get(login string, now time.Time) (Account, bool) {
	if c == nil {
		return Account{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[login]
	if !ok || !now.Before(e.until) {
		return Account{}, false
	}
	return e.acc, true
}

func (c *accountCache) put(acc Account, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	delete(c.negative, acc.Login)
	c.entries[acc.Login] = cachedAccount{acc: acc, until: now.Add(c.ttl)}
}

// unknown reports whether login is cached as not existing.
func (c *accountCache) unknown(login string, now time.Time) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.negative[login]
	return ok && now.Before(until)
}

func (c *accountCache) putUnknown(login string, now time.Time) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	if c.negative == nil {
		c.negative = map[string]time.Time{}
	}
	if len(c.negative) >= maxNegative {
		for k := range c.negative { // any one: map order is random
			delete(c.negative, k)
			break
		}
	}
	c.negative[login] = now.Add(c.ttl)
}

// sweep drops expired entries once per ttl, so the maps hold about the
// logins used in the last two ttl periods. The caller holds mu.
func (c *accountCache) sweep(now time.Time) {
	if !now.After(c.nextSweep) {
		return
	}
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
	for k, until := range c.negative {
		if !now.Before(until) {
			delete(c.negative, k)
		}
	}
	c.nextSweep = now.Add(c.ttl)
}

func (c *accountCache) forget(login string) {
	if c == nil {
		return
	}
	c.mu.Lock()
	delete(c.entries, login)
	delete(c.negative, login)
	c.mu.Unlock()
}

func (c *accountCache) clear() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.entries)
	clear(c.negative)
	c.mu.Unlock()
}

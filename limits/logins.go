package limits

// Logins applies the login limits that SIP digest and HTTP basic auth
// share, in the order that keeps them from being erased, abused or read:
//
//   - A source with Source's max failures within its window is banned:
//     nothing it sends is checked, so guessing past the limit gets nowhere,
//     and the answer cannot depend on the password.
//   - A success from a source clears only that source's failures against
//     the account it proved to own: a guesser holding one good account
//     cannot interleave logins with it to stay under the limit.
//   - An account with Account's max failures within its window (from
//     anywhere: a guess spread over many addresses) is locked, but only
//     for sources that have failed recently (within the ban) and not been
//     cleared: the owner on a phone that has not failed still gets in, so
//     nobody can lock anybody out; each new guessing address gets one
//     checked try before it is refused too. Unknown logins lock the same
//     way, so a lock tells nothing about whether an account exists.
//
// Nil fields are off; with Source nil every source counts as failing.
type Logins struct {
	Source  *Failures // by source address
	Account *Failures // by login
}

// Admit says whether an attempt from source to log in as login (""
// before the login is known) may be checked at all: "" when it may, else
// the limit refusing it ("auth_source" or "auth_account", a metrics
// label). A refused attempt as a locked login counts as a failure of the
// source, since it may be a guess.
func (l Logins) Admit(source, login string) string {
	if l.Source != nil && l.Source.Banned(source) {
		return "auth_source"
	}
	if login == "" || l.Account == nil || !l.Account.Banned(login) {
		return ""
	}
	if l.Source != nil && !l.Source.Suspect(source) {
		return ""
	}
	if l.Source != nil {
		l.Source.FailAs(source, login)
	}
	return "auth_account"
}

// Failed records a wrong password (or unknown login) from source and
// reports whether the source is now banned and the login now locked.
func (l Logins) Failed(source, login string) (sourceBanned, loginLocked bool) {
	if l.Source != nil {
		sourceBanned = l.Source.FailAs(source, login)
	}
	if l.Account != nil && login != "" {
		loginLocked = l.Account.Fail(login)
	}
	return sourceBanned, loginLocked
}

// Succeeded records that source proved it holds login's password.
func (l Logins) Succeeded(source, login string) {
	if l.Source != nil {
		l.Source.SucceedAs(source, login)
	}
}

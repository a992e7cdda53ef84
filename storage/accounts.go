package storage

import (
	"context"
	"fmt"

	"github.com/jmoiron/sqlx"

	"gchd/registrar"
)

// AccountStore returns the registrar's account store.
func (db *DB) AccountStore() registrar.AccountStore { return accountStore{db.reader()} }

type accountStore struct{ queries }

type accountRow struct {
	Login       string `db:"login"`
	DisplayName string `db:"display_name"`
	Realm       string `db:"realm"`
	HA1MD5      string `db:"ha1_md5"`
	HA1SHA256   string `db:"ha1_sha256"`
	Created     int64  `db:"created_at"`
	Updated     int64  `db:"updated_at"`
}

func (r accountRow) account() registrar.Account {
	return registrar.Account{
		Login: r.Login, DisplayName: r.DisplayName, Realm: r.Realm, HA1MD5: r.HA1MD5, HA1SHA256: r.HA1SHA256,
		Created: fromMicros(r.Created), Updated: fromMicros(r.Updated),
	}
}

func accountArgs(a registrar.Account) []any {
	return []any{a.Login, a.DisplayName, a.Realm, a.HA1MD5, a.HA1SHA256, micros(a.Created), micros(a.Updated)}
}

const accountColumns = "login, display_name, realm, ha1_md5, ha1_sha256, created_at, updated_at"

func (s accountStore) CreateAccount(ctx context.Context, a registrar.Account) error {
	return s.db.inTx(ctx, "account_create", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.sql("INSERT INTO accounts ("+accountColumns+") VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (login) DO NOTHING"), accountArgs(a)...)
		if err != nil {
			return fmt.Errorf("insert account %s: %w", a.Login, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return registrar.ErrAccountExists
		}
		return nil
	})
}

func (s accountStore) UpdateAccount(ctx context.Context, a registrar.Account) error {
	return s.db.inTx(ctx, "account_update", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.sql(`UPDATE accounts SET display_name = ?, realm = ?, ha1_md5 = ?, ha1_sha256 = ?, updated_at = ?
			WHERE login = ?`), a.DisplayName, a.Realm, a.HA1MD5, a.HA1SHA256, micros(a.Updated), a.Login)
		if err != nil {
			return fmt.Errorf("update account %s: %w", a.Login, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return registrar.ErrNoAccount
		}
		return nil
	})
}

func (s accountStore) DeleteAccount(ctx context.Context, login string) error {
	return s.db.inTx(ctx, "account_delete", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.sql("DELETE FROM accounts WHERE login = ?"), login)
		if err != nil {
			return fmt.Errorf("delete account %s: %w", login, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return registrar.ErrNoAccount
		}
		return nil
	})
}

func (s accountStore) Accounts(ctx context.Context) ([]registrar.Account, error) {
	var rows []accountRow
	if err := s.selectAll(ctx, &rows, "SELECT "+accountColumns+" FROM accounts ORDER BY login"); err != nil {
		return nil, fmt.Errorf("select accounts: %w", err)
	}
	out := make([]registrar.Account, len(rows))
	for i, r := range rows {
		out[i] = r.account()
	}
	return out, nil
}

func (s accountStore) PutAccounts(ctx context.Context, accounts []registrar.Account) (added, updated int, err error) {
	err = s.db.inTx(ctx, "account_import", func(tx *sqlx.Tx) error {
		added, updated = 0, 0
		exists, err := tx.PreparexContext(ctx, s.db.sql("SELECT COUNT(*) FROM accounts WHERE login = ?"))
		if err != nil {
			return err
		}
		defer exists.Close()
		upsert, err := tx.PreparexContext(ctx, s.db.sql("INSERT INTO accounts ("+accountColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (login) DO UPDATE SET display_name = excluded.display_name, realm = excluded.realm,
				ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256, updated_at = excluded.updated_at`))
		if err != nil {
			return err
		}
		defer upsert.Close()
		for _, a := range accounts {
			var n int
			if err := exists.GetContext(ctx, &n, a.Login); err != nil {
				return fmt.Errorf("look up account %s: %w", a.Login, err)
			}
			if _, err := upsert.ExecContext(ctx, accountArgs(a)...); err != nil {
				return fmt.Errorf("upsert account %s: %w", a.Login, err)
			}
			if n == 0 {
				added++
			} else {
				updated++
			}
		}
		return nil
	})
	return added, updated, err
}

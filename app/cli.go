package app

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"gchd/chat"
	"gchd/configs"
	"gchd/registrar"
	"gchd/storage"
)

// Stdio is where a command reads and writes.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

const usage = `gchd: a SIP-native group chat server

Usage:
  gchd [serve] [flags]                      run the server (the default)
  gchd accounts add LOGIN [-display-name DN] add an account; password on standard input
  gchd accounts passwd LOGIN                 set an account's password from standard input
  gchd accounts del LOGIN                    delete an account
  gchd accounts list                         list accounts
  gchd accounts import FILE                  add or update accounts from CSV
                                             (login,password[,display name]; - for stdin)
  gchd registrations [LOGIN] [-json]         list registered contacts (all, or LOGIN's)
  gchd registrations del LOGIN [CONTACT]     remove LOGIN's registrations (or the one of
                                             CONTACT); a running server stops using them
                                             within a second
  gchd send -user LOGIN GROUP TEXT           post TEXT to group GROUP through the API
                                             (password in GCHD_PASSWORD or on standard input;
                                             -url http://127.0.0.1:8080 by default)
  gchd migrate                               apply database migrations and exit
  gchd version                               print the version

Every command takes the configuration flags (gchd serve -h lists them), the
GCHD_* environment variables and -config FILE; accounts and migrate need the
same -database and -domain as the server (the domain is the digest realm).
`

// Main runs the gchd command line and returns the process exit code.
func Main(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) int {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, args, stdio, getenv)
	case "accounts":
		err = accountsCommand(ctx, args, stdio, getenv)
	case "migrate":
		err = migrate(ctx, args, stdio, getenv)
	case "registrations":
		err = registrationsCommand(ctx, args, stdio, getenv)
	case "send":
		err = send(ctx, args, stdio, getenv)
	case "version":
		fmt.Fprintln(stdio.Out, "gchd", Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdio.Out, usage)
	default:
		fmt.Fprintf(stdio.Err, "gchd: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stdio.Err, "gchd %s: %v\n", cmd, err)
		return 2
	default:
		fmt.Fprintf(stdio.Err, "gchd %s: %v\n", cmd, err)
		return 1
	}
}

var errUsage = errors.New("usage")

// command is a parsed subcommand: its configuration and positional arguments.
type command struct {
	cfg  configs.Config
	args []string
}

// parse parses flags, which may come before, between or after positional
// arguments, and loads the configuration.
func parse(name string, args []string, stdio Stdio, getenv func(string) string, extra func(*flag.FlagSet)) (command, error) {
	fs := flag.NewFlagSet("gchd "+name, flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	cf := configs.Register(fs)
	if extra != nil {
		extra(fs)
	}
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return command{}, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	cfg, err := configs.Load(cf, getenv)
	if err != nil {
		return command{}, err
	}
	return command{cfg: cfg, args: positional}, nil
}

// newLogger returns the process logger for the log settings.
func newLogger(cfg configs.Log, w io.Writer) (*slog.Logger, *slog.LevelVar) {
	level := new(slog.LevelVar)
	level.Set(parseLevel(cfg.Level))
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts)), level
	}
	return slog.New(slog.NewTextHandler(w, opts)), level
}

func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

func serve(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) error {
	c, err := parse("serve", args, stdio, getenv, nil)
	if err != nil {
		return err
	}
	if len(c.args) > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, c.args[0])
	}
	log, level := newLogger(c.cfg.Log, stdio.Err)
	a, err := New(ctx, c.cfg, log)
	if err != nil {
		return err
	}
	// SIGHUP reads the configuration again (file, environment, the same
	// flags) and applies the log level and the limits.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				cfg, err := parse("serve", args, stdio, getenv, nil)
				if err != nil {
					log.Error("reload: configuration refused, keeping the current one", "error", err)
					continue
				}
				level.Set(parseLevel(cfg.cfg.Log.Level))
				a.Reload(cfg.cfg)
			}
		}
	}()
	return a.Run(ctx)
}

func migrate(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) error {
	c, err := parse("migrate", args, stdio, getenv, nil)
	if err != nil {
		return err
	}
	db, err := storage.Connect(ctx, c.cfg.Database, storage.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	before, _, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	after, _, err := db.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "schema version %d (was %d)\n", after, before)
	return nil
}

func accountsCommand(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return fmt.Errorf("%w: gchd accounts add|passwd|del|list|import", errUsage)
	}
	sub, args := args[0], args[1:]
	var displayName string
	c, err := parse("accounts "+sub, args, stdio, getenv, func(fs *flag.FlagSet) {
		if sub == "add" {
			fs.StringVar(&displayName, "display-name", "", "display name of the account")
		}
	})
	if err != nil {
		return err
	}
	wantArgs := 1
	if sub == "list" {
		wantArgs = 0
	}
	if len(c.args) != wantArgs {
		return fmt.Errorf("%w: gchd accounts %s takes %d argument(s), got %d", errUsage, sub, wantArgs, len(c.args))
	}
	var login string
	if wantArgs == 1 && sub != "import" {
		login = c.args[0]
		if !chat.ValidLogin(login) {
			return fmt.Errorf("%w: login %q: use 1 to 64 letters, digits and . - _ + ~, not starting with %q", errUsage, login, chat.GroupUserPrefix)
		}
	}
	db, err := storage.Open(ctx, c.cfg.Database, storage.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	accounts := registrar.NewAccounts(db.AccountStore(), c.cfg.Domain)

	switch sub {
	case "add":
		password, err := readPassword(stdio)
		if err != nil {
			return err
		}
		if err := accounts.Add(ctx, login, password, displayName); err != nil {
			return err
		}
		fmt.Fprintf(stdio.Out, "added %s@%s\n", login, c.cfg.Domain)
	case "passwd":
		password, err := readPassword(stdio)
		if err != nil {
			return err
		}
		if err := accounts.SetPassword(ctx, login, password); err != nil {
			return err
		}
		fmt.Fprintf(stdio.Out, "password of %s@%s changed\n", login, c.cfg.Domain)
	case "del":
		if err := accounts.Delete(ctx, login); err != nil {
			return err
		}
		fmt.Fprintf(stdio.Out, "deleted %s\n", login)
	case "import":
		return importAccounts(ctx, accounts, c.args[0], stdio)
	case "list":
		list, err := accounts.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "LOGIN\tDISPLAY NAME\tREALM\tCREATED")
		for _, acc := range list {
			realm := acc.Realm
			if realm != c.cfg.Domain {
				realm += " (not the domain: set the password again)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", acc.Login, acc.DisplayName, realm, acc.Created.Format("2006-01-02 15:04:05"))
		}
		return tw.Flush()
	default:
		return fmt.Errorf("%w: unknown accounts command %q", errUsage, sub)
	}
	return nil
}

// registrationJSON is a binding as gchd registrations -json prints it.
type registrationJSON struct {
	Login     string    `json:"login"`
	Contact   string    `json:"contact"`
	Transport string    `json:"transport"`
	Source    string    `json:"source"`
	Expires   time.Time `json:"expires"`
	ExpiresIn int       `json:"expires_in"` // seconds
	Instance  string    `json:"instance,omitempty"`
	RegID     int       `json:"reg_id,omitempty"`
	UserAgent string    `json:"user_agent"`
	Node      string    `json:"node"`
	NAT       bool      `json:"nat"`
	CallID    string    `json:"call_id"`
	CSeq      uint32    `json:"cseq"`
	Updated   time.Time `json:"updated"`
}

// registrationsCommand lists the registrar's bindings from the database,
// as kamctl ul show does, or removes a login's. A running server holds
// bindings in memory: it reads the removals every registrar.RemovalPoll
// and forgets them then.
func registrationsCommand(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) error {
	del := len(args) > 0 && args[0] == "del"
	if del {
		args = args[1:]
	}
	var asJSON bool
	c, err := parse("registrations", args, stdio, getenv, func(fs *flag.FlagSet) {
		if !del {
			fs.BoolVar(&asJSON, "json", false, "print JSON, one array")
		}
	})
	if err != nil {
		return err
	}
	switch {
	case del && (len(c.args) < 1 || len(c.args) > 2):
		return fmt.Errorf("%w: gchd registrations del LOGIN [CONTACT]", errUsage)
	case !del && len(c.args) > 1:
		return fmt.Errorf("%w: gchd registrations [LOGIN] or gchd registrations del LOGIN [CONTACT]", errUsage)
	}
	login := ""
	if len(c.args) > 0 {
		login = c.args[0]
		if !chat.ValidLogin(login) {
			return fmt.Errorf("%w: login %q is not valid", errUsage, login)
		}
	}
	db, err := storage.Open(ctx, c.cfg.Database, storage.Options{})
	if err != nil {
		return err
	}
	defer db.Close()
	now := time.Now()
	if del {
		contact := ""
		if len(c.args) == 2 {
			contact = c.args[1]
		}
		removed, err := db.RemoveBindings(ctx, login, contact, now)
		if err != nil {
			return err
		}
		if len(removed) == 0 {
			if contact != "" {
				return fmt.Errorf("%s has no registration of contact %s", login, contact)
			}
			return fmt.Errorf("%s has no registrations", login)
		}
		for _, b := range removed {
			fmt.Fprintf(stdio.Out, "removed %s %s (%s from %s)\n", b.AOR, b.URI, b.Transport, b.Source)
		}
		return nil
	}
	list, err := db.ListBindings(ctx, login, now)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]registrationJSON, len(list))
		for i, b := range list {
			out[i] = registrationJSON{Login: b.AOR, Contact: b.URI, Transport: b.Transport, Source: b.Source,
				Expires: b.Expires.UTC(), ExpiresIn: int(b.Expires.Sub(now).Seconds()), Instance: b.Instance, RegID: b.RegID,
				UserAgent: b.UserAgent, Node: b.Node, NAT: b.NAT, CallID: b.CallID, CSeq: b.CSeq, Updated: b.Updated.UTC()}
		}
		enc := json.NewEncoder(stdio.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(stdio.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LOGIN\tCONTACT\tTRANSPORT\tSOURCE\tEXPIRES\tINSTANCE\tUSER AGENT\tNODE")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, b := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%ds\t%s\t%s\t%s\n", b.AOR, strings.Map(printable, b.URI), b.Transport, b.Source,
			int(b.Expires.Sub(now).Seconds()), dash(strings.Map(printable, b.Instance)), dash(strings.Map(printable, b.UserAgent)), dash(b.Node))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if login != "" && len(list) == 0 {
		fmt.Fprintf(stdio.Err, "%s has no registrations\n", login)
	}
	return nil
}

// printable keeps a phone's User-Agent from moving the terminal or the
// table: control characters and tabs become spaces.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return ' '
	}
	return r
}

// readPassword reads one line from standard input; on a terminal it asks
// twice without echo.
func readPassword(stdio Stdio) (string, error) {
	if f, ok := stdio.In.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stdio.Err, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stdio.Err)
		if err != nil {
			return "", err
		}
		fmt.Fprint(stdio.Err, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stdio.Err)
		if err != nil {
			return "", err
		}
		if string(p1) != string(p2) {
			return "", errors.New("the passwords differ")
		}
		return string(p1), registrar.CheckPassword(string(p1))
	}
	line, err := bufio.NewReader(stdio.In).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read password from standard input: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	return line, registrar.CheckPassword(line)
}

// importAccounts adds or updates the accounts of a CSV file
// (login,password[,display name]) in one transaction. Every bad row is
// reported with its line number, and then nothing is imported.
func importAccounts(ctx context.Context, accounts *registrar.Accounts, path string, stdio Stdio) error {
	in := stdio.In
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	r := csv.NewReader(bufio.NewReader(in))
	r.FieldsPerRecord = -1
	r.TrimLeadingSpace = true
	r.Comment = '#'
	var list []registrar.Account
	var problems []string
	seen := map[string]int{}
	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		line, _ := r.FieldPos(0)
		if err != nil {
			var perr *csv.ParseError
			if errors.As(err, &perr) {
				problems = append(problems, fmt.Sprintf("line %d: %v", perr.Line, perr.Err))
				continue
			}
			return err
		}
		if len(list) == 0 && len(problems) == 0 && len(seen) == 0 && strings.EqualFold(rec[0], "login") {
			continue // a header row
		}
		if len(rec) < 2 || len(rec) > 3 {
			problems = append(problems, fmt.Sprintf("line %d: want login,password[,display name], got %d fields", line, len(rec)))
			continue
		}
		login, password, dn := rec[0], rec[1], ""
		if len(rec) == 3 {
			dn = rec[2]
		}
		if !chat.ValidLogin(login) {
			problems = append(problems, fmt.Sprintf("line %d: login %q is not valid", line, login))
			continue
		}
		if first, dup := seen[login]; dup {
			problems = append(problems, fmt.Sprintf("line %d: login %q already on line %d", line, login, first))
			continue
		}
		seen[login] = line
		acc, err := accounts.New(login, password, dn)
		if err != nil {
			problems = append(problems, fmt.Sprintf("line %d: %s: %v", line, login, err))
			continue
		}
		list = append(list, acc)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stdio.Err, p)
		}
		return fmt.Errorf("%d bad rows: nothing imported", len(problems))
	}
	added, updated, err := accounts.Import(ctx, list)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdio.Out, "imported %d accounts: %d added, %d updated\n", len(list), added, updated)
	return nil
}

// send posts a message to a group through the HTTP API, as a smoke test of
// a running server: gchd send -user alice 1 "hello".
func send(ctx context.Context, args []string, stdio Stdio, getenv func(string) string) error {
	fs := flag.NewFlagSet("gchd send", flag.ContinueOnError)
	fs.SetOutput(stdio.Err)
	base := fs.String("url", "http://127.0.0.1:8080", "the server's HTTP API (http:// or https://)")
	user := fs.String("user", "", "login to post as")
	dn := fs.String("dn", "", "display name shown with the message")
	insecure := fs.Bool("insecure", false, "accept any TLS certificate (a test server's)")
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *user == "" || len(positional) != 2 {
		return fmt.Errorf("%w: gchd send -user LOGIN GROUP TEXT", errUsage)
	}
	gid, err := strconv.ParseUint(positional[0], 10, 32)
	if err != nil {
		return fmt.Errorf("%w: group %q is not a group id", errUsage, positional[0])
	}
	password := getenv("GCHD_PASSWORD")
	if password == "" {
		if password, err = readPassword(stdio); err != nil {
			return err
		}
	}
	pm, _ := json.Marshal(map[string]any{"id": gid, "mb": positional[1], "dn": *dn})
	form := url.Values{"gm": {"sendMessage"}, "pm": {string(pm)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(*base, "/")+"/gch.ashx", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(*user, password)
	client := &http.Client{Timeout: 30 * time.Second}
	if *insecure {
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1024))
	if res.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "200" {
		return fmt.Errorf("the server answered %s: %s", res.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdio.Out, "sent as MID %s\n", res.Header.Get("X-GC-MID"))
	return nil
}

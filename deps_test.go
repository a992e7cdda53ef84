package main

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The arrows of DESIGN.md section 1: which of our packages each package may
// import (test files aside), and which outside packages it must not.
var allowedImports = map[string][]string{
	"chat":                {},
	"registrar":           {},
	"metrics":             {},
	"configs":             {},
	"limits":              {},
	"trace":               {},
	"push":                {},
	"cluster":             {},
	"storage":             {"chat", "registrar", "cluster"},
	"storage/storagetest": {"chat", "registrar"},
	// The test kit is support for tests and the benchmark tools
	// (testSupport below).
	"internal/testkit":       {"configs", "registrar", "storage"},
	"internal/testkit/sipua": {},
	"sipserver":              {"chat", "registrar", "metrics", "limits", "sipserver/internal/ingress"},
	// The ingress does not import the server: it consumes a Handler.
	"sipserver/internal/ingress": {"limits"},
	"httpapi":                    {"chat", "registrar", "metrics", "limits"},
}

var forbiddenImports = map[string][]string{
	"chat":                       {"github.com/emiago/sipgo", "net/http", "database/sql", "github.com/jmoiron/sqlx"},
	"registrar":                  {"github.com/emiago/sipgo", "net/http", "database/sql", "github.com/jmoiron/sqlx"},
	"httpapi":                    {"github.com/emiago/sipgo", "database/sql", "github.com/jmoiron/sqlx"},
	"sipserver":                  {"net/http", "database/sql", "github.com/jmoiron/sqlx"},
	"sipserver/internal/ingress": {"net/http", "database/sql", "github.com/jmoiron/sqlx"},
	"trace":                      {"github.com/emiago/sipgo", "net/http", "database/sql", "github.com/jmoiron/sqlx"},
	"push":                       {"github.com/emiago/sipgo", "database/sql", "github.com/jmoiron/sqlx"},
	"cluster":                    {"github.com/emiago/sipgo", "net/http", "database/sql", "github.com/jmoiron/sqlx"},
}

// testSupport is imported by tests (and bench/, which drives gchd as a
// client) and by no package that goes into gchd itself.
var testSupport = []string{"internal/testkit", "storage/storagetest"}

// mayUseTestSupport says whether a non-test file of pkg may import test
// support.
func mayUseTestSupport(pkg string) bool {
	if pkg == "bench" || strings.HasPrefix(pkg, "bench/") {
		return true
	}
	for _, s := range testSupport {
		if pkg == s || strings.HasPrefix(pkg, s+"/") {
			return true
		}
	}
	return false
}

func TestPackageDependencies(t *testing.T) {
	const module = "gchd/"
	seen := map[string]bool{}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		pkg := filepath.ToSlash(filepath.Dir(path))
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		allowed, ruled := allowedImports[pkg]
		seen[pkg] = true
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			for _, s := range testSupport {
				if (p == module+s || strings.HasPrefix(p, module+s+"/")) && !mayUseTestSupport(pkg) {
					t.Errorf("%s imports %s: test support is for tests only", path, p)
				}
			}
			if ruled && strings.HasPrefix(p, module) && !slices.Contains(allowed, strings.TrimPrefix(p, module)) {
				t.Errorf("%s imports %s: %s may import only %v", path, p, pkg, allowed)
			}
			for _, bad := range forbiddenImports[pkg] {
				if p == bad || strings.HasPrefix(p, bad+"/") {
					t.Errorf("%s imports %s, which %s must not", path, p, pkg)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg := range allowedImports {
		if !seen[pkg] {
			t.Errorf("package %s has no Go files: the rule table is stale", pkg)
		}
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"tether/internal/busyboximage"
	"tether/kubelet/images"
)

func TestImageImportAndList(t *testing.T) {
	if _, err := os.Stat(busyboximage.Binary); err != nil {
		t.Skipf("no %s (install busybox-static): %v", busyboximage.Binary, err)
	}
	dataDir := t.TempDir()
	file := filepath.Join(t.TempDir(), "busybox.tar")
	if err := busyboximage.WriteTarball(file); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"image", "import", "--data-dir", dataDir, file}, &stdout, &stderr); err != nil {
		t.Fatalf("tether image import: %v\n%s", err, stderr.String())
	}
	imported := regexp.MustCompile(`(?m)^imported ` + regexp.QuoteMeta(busyboximage.Ref) + ` (sha256:[0-9a-f]{64})$`)
	m := imported.FindStringSubmatch(stdout.String())
	if m == nil {
		t.Fatalf("import printed %q, want a line matching %s", stdout.String(), imported)
	}
	if !strings.Contains(stderr.String(), "layer 1/1") {
		t.Errorf("import progress %q, want a layer message", stderr.String())
	}

	// The agent's store on the same data dir sees the image.
	s, err := images.New(images.Config{Root: filepath.Join(dataDir, "images")})
	if err != nil {
		t.Fatal(err)
	}
	img, err := s.Get(busyboximage.Ref)
	if err != nil || img.ID != m[1] {
		t.Fatalf("Get(%s) = %v, %v; want %s", busyboximage.Ref, img, err, m[1])
	}

	stdout.Reset()
	if err := run(t.Context(), []string{"image", "ls", "--data-dir", dataDir}, &stdout, &stderr); err != nil {
		t.Fatalf("tether image ls: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^IMAGE\s+TAG\s+IMAGE ID\s+SIZE$`).MatchString(lines[0]) {
		t.Fatalf("image ls printed %q, want a header and one image", stdout.String())
	}
	row := regexp.MustCompile(`^tether\.local/busybox\s+latest\s+` + m[1][7:19] + `\s+[0-9.]+ [kM]B$`)
	if !row.MatchString(lines[1]) {
		t.Errorf("image ls row %q, want it to match %s", lines[1], row)
	}
}

func TestImageImportErrorNamesFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.tar")
	var stdout, stderr bytes.Buffer
	err := run(t.Context(), []string{"image", "import", "--data-dir", t.TempDir(), missing}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("import of a missing file: %v, want an error naming %s", err, missing)
	}
	if err := run(t.Context(), []string{"image", "import", "--data-dir", t.TempDir()}, &stdout, &stderr); err == nil {
		t.Errorf("import without files succeeded")
	}
}

func TestHumanSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.0 kB", 1_234_567: "1.2 MB", 5_000_000_000: "5.0 GB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

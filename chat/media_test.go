package chat_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"image"
	"image/jpeg"
	"testing"
	"time"

	"gchd/chat"
	"gchd/httpapi"
)

// hugeJPEG is a small baseline JPEG whose SOF0 declares w×h pixels.
func hugeJPEG(t *testing.T, w, h int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	for i := 2; i+9 < len(data); i += 2 + int(binary.BigEndian.Uint16(data[i+2:])) {
		if data[i+1] == 0xC0 {
			binary.BigEndian.PutUint16(data[i+5:], uint16(h))
			binary.BigEndian.PutUint16(data[i+7:], uint16(w))
			return data
		}
	}
	t.Fatal("no SOF0")
	return nil
}

// The pixel count is checked before any decode and answers 407; an upload
// slot held in the context is reused, and a second caller waits
// UploadWait and gets ErrBusy (503).
func TestMediaPixelsAndSlots(t *testing.T) {
	l := chat.DefaultLimits()
	l.MaxUploads = 1
	l.UploadWait = 50 * time.Millisecond
	svc := chat.NewService(nil, chat.WithLimits(l))
	ctx, release, err := svc.ReserveUpload(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	_, err = svc.SetMedia(ctx, caller("a"), 1, chat.MediaAvatar, hugeJPEG(t, 16384, 16384), "")
	if !errors.Is(err, chat.ErrNotJPEG) || httpapi.Code(err) != 407 {
		t.Errorf("16384×16384 in the held slot: %v (code %d), want 407", err, httpapi.Code(err))
	}
	start := time.Now()
	_, _, err = svc.ReserveUpload(context.Background())
	if !errors.Is(err, chat.ErrBusy) || httpapi.Code(err) != 503 || time.Since(start) < l.UploadWait {
		t.Errorf("second upload with the only slot taken: %v (code %d) after %v, want 503 after %v", err, httpapi.Code(err), time.Since(start), l.UploadWait)
	}
	if _, err := svc.SetMedia(context.Background(), caller("a"), 1, chat.MediaAvatar, hugeJPEG(t, 8, 8), ""); !errors.Is(err, chat.ErrBusy) {
		t.Errorf("SetMedia without a slot while it is taken: %v, want ErrBusy", err)
	}
	release()
	release() // a second call gives nothing back twice
	_, release2, err := svc.ReserveUpload(context.Background())
	if err != nil {
		t.Fatalf("slot after release: %v", err)
	}
	release2()
	if _, _, err := svc.ReserveUpload(context.Background()); err != nil {
		t.Fatalf("slot after the second release: %v", err)
	}
}

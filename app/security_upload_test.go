package app

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"image/jpeg"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gchd/internal/testkit"
	"gchd/storage"
)

// progressiveJPEG is a valid grayscale progressive JPEG of w×h pixels with
// a single AC scan whose end-of-band runs cover 32767 blocks a symbol: a few
// bytes per 2 million pixels. It is what makes a decoder allocate for the
// declared size while the file stays tiny (65535×65535 in under 6 KB).
func progressiveJPEG(w, h int) []byte {
	var b bytes.Buffer
	segment := func(marker byte, body []byte) {
		b.Write([]byte{0xFF, marker})
		binary.Write(&b, binary.BigEndian, uint16(len(body)+2))
		b.Write(body)
	}
	b.Write([]byte{0xFF, 0xD8})
	segment(0xDB, append([]byte{0x00}, bytes.Repeat([]byte{1}, 64)...))
	segment(0xC2, []byte{8, byte(h >> 8), byte(h), byte(w >> 8), byte(w), 1, 1, 0x11, 0})
	// AC table 0: one code, "0", for EOB14 (a run of 2^14 plus 14 bits).
	segment(0xC4, append([]byte{0x10, 1}, append(make([]byte, 15), 0xE0)...))
	segment(0xDA, []byte{1, 1, 0x00, 1, 63, 0x00})
	blocks := ((w + 7) / 8) * ((h + 7) / 8)
	var bits bitWriter
	for left := blocks; left > 0; left -= 32767 {
		bits.write(0, 1)
		bits.write(32767-(1<<14), 14)
	}
	b.Write(bits.flush())
	b.Write([]byte{0xFF, 0xD9})
	return b.Bytes()
}

// bitWriter packs Huffman codes MSB first, stuffing 0x00 after 0xFF.
type bitWriter struct {
	out  []byte
	acc  uint32
	nacc uint
}

func (bw *bitWriter) write(v uint32, n uint) {
	for i := int(n) - 1; i >= 0; i-- {
		bw.acc = bw.acc<<1 | (v>>uint(i))&1
		if bw.nacc++; bw.nacc == 8 {
			bw.out = append(bw.out, byte(bw.acc))
			if byte(bw.acc) == 0xFF {
				bw.out = append(bw.out, 0)
			}
			bw.acc, bw.nacc = 0, 0
		}
	}
}

func (bw *bitWriter) flush() []byte {
	for bw.nacc != 0 {
		bw.write(1, 1)
	}
	return bw.out
}

// patchSize rewrites the dimensions in the SOF0 or SOF2 segment of a JPEG.
func patchSize(t testing.TB, data []byte, w, h int) []byte {
	t.Helper()
	out := bytes.Clone(data)
	for i := 2; i+9 < len(out); {
		if out[i] != 0xFF {
			t.Fatalf("no marker at %d", i)
		}
		if m := out[i+1]; m == 0xC0 || m == 0xC2 {
			binary.BigEndian.PutUint16(out[i+5:], uint16(h))
			binary.BigEndian.PutUint16(out[i+7:], uint16(w))
			return out
		}
		i += 2 + int(binary.BigEndian.Uint16(out[i+2:]))
	}
	t.Fatal("no SOF segment")
	return nil
}

// memWatch samples the process's heap and RSS while an attack runs; the
// server runs in this process, so its memory is ours.
type memWatch struct {
	baseHeap, baseRSS uint64
	peakHeap, peakRSS atomic.Uint64
	stop              chan struct{}
	done              sync.WaitGroup
	gcPercent         int
}

func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64()
}

// rssBytes is VmRSS of /proc/self/status (0 where there is none).
func rssBytes() uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func watchMemory() *memWatch {
	runtime.GC()
	// The collector lets garbage grow in proportion to the live heap, and
	// the live heap is whatever the tests before this one left: collect
	// early, so that the peak measures what the attack holds, not how much
	// garbage the pacer allowed.
	m := &memWatch{baseHeap: heapBytes(), baseRSS: rssBytes(), stop: make(chan struct{}), gcPercent: debug.SetGCPercent(10)}
	m.peakHeap.Store(m.baseHeap)
	m.peakRSS.Store(m.baseRSS)
	m.done.Add(1)
	go func() {
		defer m.done.Done()
		for {
			if h := heapBytes(); h > m.peakHeap.Load() {
				m.peakHeap.Store(h)
			}
			if r := rssBytes(); r > m.peakRSS.Load() {
				m.peakRSS.Store(r)
			}
			select {
			case <-m.stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return m
}

// end stops sampling, logs the figures and fails the test when the heap
// grew by more than limit at its peak, or still holds more than 20 MB once
// collected.
func (m *memWatch) end(t testing.TB, what string, limit uint64) {
	t.Helper()
	close(m.stop)
	m.done.Wait()
	debug.SetGCPercent(m.gcPercent)
	runtime.GC()
	after := heapBytes()
	mb := func(v uint64) float64 { return float64(v) / (1 << 20) }
	growth := m.peakHeap.Load() - m.baseHeap
	t.Logf("%s: heap %.1f MiB, peak %.1f MiB (+%.1f), %.1f MiB after GC; RSS %.1f MiB, peak %.1f MiB, %.1f MiB after",
		what, mb(m.baseHeap), mb(m.peakHeap.Load()), mb(growth), mb(after), mb(m.baseRSS), mb(m.peakRSS.Load()), mb(rssBytes()))
	limit += m.baseHeap / 10 // the garbage GOGC=10 lets grow
	if growth > limit {
		t.Errorf("%s: the heap grew by %.1f MiB, at most %.1f MiB allowed", what, mb(growth), mb(limit))
	}
	if after > m.baseHeap+20<<20 {
		t.Errorf("%s: %.1f MiB still held after the attack (%.1f MiB before)", what, mb(after), mb(m.baseHeap))
	}
}

// streamUpload POSTs a multipart uploadAvatar whose file is size bytes of
// head followed by zeros, generated as it is sent so that the client holds
// nothing. chunked leaves out Content-Length, so the server cannot refuse
// the body before reading it.
func (s *server) streamUpload(login string, pm string, head []byte, size int64, chunked bool) (reply, error) {
	boundary := "gchdtestboundary"
	var pre bytes.Buffer
	mw := multipart.NewWriter(&pre)
	mw.SetBoundary(boundary)
	mw.WriteField("gm", "uploadAvatar")
	mw.WriteField("pm", pm)
	hdr := textproto.MIMEHeader{}
	hdr.Set("Content-Disposition", `form-data; name="file"; filename="x.jpg"`)
	hdr.Set("Content-Type", "image/jpeg")
	mw.CreatePart(hdr)
	post := "\r\n--" + boundary + "--\r\n"
	body := io.MultiReader(bytes.NewReader(pre.Bytes()), bytes.NewReader(head),
		io.LimitReader(zeros{}, size-int64(len(head))), strings.NewReader(post))
	req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", body)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.SetBasicAuth(login, "pw-"+login)
	if !chunked {
		req.ContentLength = int64(pre.Len()) + size + int64(len(post))
	}
	res, err := s.client.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, body: b, header: res.Header}, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A JPEG declaring a huge size is refused with 407 before it is decoded:
// the 65535×65535 progressive one (5.7 KB; decoding it asks for 16 GiB and
// killed the server) and 16384×16384 ones, four at once, baseline and
// progressive (1.34 GB of RSS each). Memory does not move, nothing is
// stored, and an ordinary avatar and one at exactly the pixel limit still
// work.
func TestUploadDecompressionBomb(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		pm := fmt.Sprintf(`{"id":%d}`, id)
		if _, err := jpeg.Decode(bytes.NewReader(progressiveJPEG(64, 48))); err != nil {
			t.Fatalf("the crafted progressive JPEG does not decode: %v", err)
		}
		before := s.rowCounts()

		t.Run("65535x65535", func(t *testing.T) {
			bomb := progressiveJPEG(65535, 65535)
			t.Logf("65535×65535 progressive JPEG: %d bytes", len(bomb))
			m := watchMemory()
			if r := s.upload("own", "pw-own", pm, "file", "bomb.jpg", bomb); r.code() != 407 {
				t.Errorf("65535×65535: %s, want 407", r)
			}
			m.end(t, "65535×65535 progressive", 100<<20)
		})
		t.Run("16384x16384", func(t *testing.T) {
			small := progressiveJPEG(16384, 16384)
			baseline := patchSize(t, jpegOf(t, 8, 8), 16384, 16384)
			t.Logf("16384×16384: progressive %d bytes, baseline %d bytes", len(small), len(baseline))
			m := watchMemory()
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					data := [][]byte{small, baseline}[i%2]
					if r := s.upload("own", "pw-own", pm, "file", "big.jpg", data); r.code() != 407 {
						t.Errorf("16384×16384 (%d): %s, want 407", i, r)
					}
				}()
			}
			wg.Wait()
			m.end(t, "four 16384×16384 at once", 100<<20)
		})
		if after := s.rowCounts(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("refused uploads changed the database: %v, was %v", after, before)
		}
		t.Run("limit", func(t *testing.T) {
			m := watchMemory()
			// Exactly chat.max_image_pixels.
			if r := s.upload("own", "pw-own", pm, "file", "limit.jpg", progressiveJPEG(2048, 2048)); r.status != 200 {
				t.Errorf("2048×2048 (the limit): %s, want 200", r)
			}
			m.end(t, "2048×2048 decoded", 100<<20)
			if r := s.upload("own", "pw-own", pm, "file", "over.jpg", progressiveJPEG(2049, 2048)); r.code() != 407 {
				t.Errorf("2049×2048: %s, want 407", r)
			}
		})
		avatar := jpegOf(t, 64, 64)
		if r := s.upload("own", "pw-own", pm, "file", "avatar.jpg", avatar); r.status != 200 {
			t.Fatalf("ordinary avatar: %s", r)
		}
		if r := s.call("mem", "pw-mem", "downloadAvatar", pm); r.status != 200 || !bytes.Equal(r.body, avatar) {
			t.Errorf("download of the avatar: %d, %d bytes, want the %d uploaded", r.status, len(r.body), len(avatar))
		}
	})
}

// 50 uploads at once of 16 MiB each (the largest video) used to be held
// whole, whatever the method: 1.37 GB. An avatar is now read up to its
// limit and refused with 411, with or without Content-Length; 50 videos
// over their limit are refused with 411 (or 503 when every upload slot
// stays taken), at most chat.max_concurrent_uploads of them buffered at a
// time. Nothing is stored.
func TestUploadFloodBoundedMemory(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		before := s.rowCounts()
		head := jpegOf(t, 8, 8)
		flood := func(what, pm string, size int64, chunked bool, limit uint64) {
			t.Helper()
			codes := map[int]int{}
			var mu sync.Mutex
			m := watchMemory()
			var wg sync.WaitGroup
			for range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r, err := s.streamUpload("own", pm, head, size, chunked)
					code := r.code()
					if err != nil {
						// Refused before the client finished writing: the
						// server closed on it. Nothing may be stored (checked
						// below), and most must still read the code.
						code = -1
						t.Logf("%s: %v", what, err)
					}
					if code == 503 && r.header.Get("Retry-After") == "" {
						t.Errorf("%s: 503 without Retry-After", what)
					}
					mu.Lock()
					codes[code]++
					mu.Unlock()
				}()
			}
			wg.Wait()
			m.end(t, what, limit)
			t.Logf("%s: answers %v", what, codes)
			if codes[411]+codes[503]+codes[-1] != 50 || codes[-1] > 5 {
				t.Errorf("%s: answers %v, want 411 (or 503, or a reset mid-write: at most 5) to all 50", what, codes)
			}
		}
		avatar := fmt.Sprintf(`{"id":%d}`, id)
		video := fmt.Sprintf(`{"id":%d,"t":"video"}`, id)
		flood("50 avatars of 16 MiB with Content-Length", avatar, 16<<20, false, 100<<20)
		flood("50 avatars of 16 MiB chunked", avatar, 16<<20, true, 100<<20)
		flood("50 videos of 17 MiB with Content-Length", video, 17<<20, false, 100<<20)
		// Each slot may hold a buffer of max_video_bytes, and the collector
		// lets garbage grow as large as the live heap before it runs.
		slots := uint64(s.cfg.Chat.MaxUploads)
		flood("50 videos of 17 MiB chunked", video, 17<<20, true, 2*slots*uint64(s.cfg.Chat.MaxVideoBytes)+48<<20)
		if after := s.rowCounts(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("refused uploads changed the database: %v, was %v", after, before)
		}
	})
}

// When every upload slot is taken, an upload waits chat.upload_wait and is
// answered 503 with Retry-After; it goes through once a slot is free.
func TestUploadSlotsFull(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		cfg.Chat.UploadWait = 300 * time.Millisecond
		s := start(t, cfg)
		id := setupPair(t, s)
		pm := fmt.Sprintf(`{"id":%d}`, id)
		// Slow senders: each has sent its fields and the start of its file,
		// so it holds a slot, and sends the rest only when told.
		var writers []*io.PipeWriter
		var wg sync.WaitGroup
		for range s.cfg.Chat.MaxUploads {
			pr, pw := io.Pipe()
			writers = append(writers, pw)
			var pre bytes.Buffer
			mw := multipart.NewWriter(&pre)
			mw.WriteField("gm", "uploadAvatar")
			mw.WriteField("pm", pm)
			mw.CreateFormFile("file", "slow.jpg")
			req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", pr)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			req.SetBasicAuth("own", "pw-own")
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.client.Do(req)
				if err == nil {
					res.Body.Close()
				}
			}()
			pw.Write(pre.Bytes())
			pw.Write(make([]byte, 5000)) // past the multipart reader's 4 KiB look-ahead
		}
		deadline := time.Now().Add(5 * time.Second)
		var r reply
		for time.Now().Before(deadline) {
			if r = s.upload("own", "pw-own", pm, "file", "a.jpg", jpegOf(t, 8, 8)); r.code() == 503 {
				break
			}
		}
		if r.code() != 503 || r.header.Get("Retry-After") == "" {
			t.Errorf("upload with every slot taken: %s %v, want 503 with Retry-After", r, r.header)
		}
		for _, pw := range writers {
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}
		wg.Wait()
		if r := s.upload("own", "pw-own", pm, "file", "a.jpg", jpegOf(t, 8, 8)); r.status != 200 {
			t.Errorf("upload once the slots are free: %s", r)
		}
	})
}

// An API call's body is read up to http.max_body_bytes: a 1 MiB form is
// refused with 400 and nothing is stored, a multipart call of another
// method does not get to send a file, and the largest legitimate call, a
// message of chat.max_message_bytes whose every byte is escaped twice,
// still fits.
func TestBodyLimits(t *testing.T) {
	testkit.Each(t, func(t *testing.T, engine storage.Engine) {
		cfg := testConfig(t, engine)
		s := start(t, cfg)
		id := setupPair(t, s)
		before := s.rowCounts()
		pm := fmt.Sprintf(`{"id":%d,"mb":"hello"}`, id)
		form := url.Values{"gm": {"sendMessage"}, "pm": {pm}}.Encode() + "&pad="
		form += strings.Repeat("x", 1<<20-len(form))
		for _, chunked := range []bool{false, true} {
			req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", io.MultiReader(strings.NewReader(form)))
			if !chunked {
				req.ContentLength = int64(len(form))
			}
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth("own", "pw-own")
			if r := s.do(req); r.code() != 400 {
				t.Errorf("1 MiB form (chunked %v): %s, want 400", chunked, r)
			}
		}
		// sendMessage as multipart with a 1 MiB "file": not an upload.
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		mw.WriteField("gm", "sendMessage")
		mw.WriteField("pm", pm)
		fw, _ := mw.CreateFormFile("file", "x.bin")
		fw.Write(make([]byte, 1<<20))
		mw.Close()
		req, _ := http.NewRequest(http.MethodPost, s.base+"/gch.ashx", &b)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.SetBasicAuth("own", "pw-own")
		if r := s.do(req); r.code() != 400 {
			t.Errorf("sendMessage with a 1 MiB file: %s, want 400", r)
		}
		if after := s.rowCounts(); fmt.Sprint(after) != fmt.Sprint(before) {
			t.Errorf("refused calls changed the database: %v, was %v", after, before)
		}
		mb := strings.Repeat("\x01", s.cfg.Chat.MaxMessageBytes)
		if r := s.call("own", "pw-own", "sendMessage", map[string]any{"id": id, "mb": mb, "dn": strings.Repeat("😀", 100)}); r.status != 200 {
			t.Errorf("largest message, every byte escaped: %s", r)
		}
	})
}

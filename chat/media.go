package chat

import (
	"bytes"
	"context"
	"fmt"
	"image/jpeg"
	"sync"
	"time"
)

// uploadSlot is the context key under which a context carries the Service
// whose upload slot its holder took.
type uploadSlot struct{}

// ReserveUpload takes one of the service's upload slots, waiting up to
// Limits.UploadWait, and returns a context that carries it and the function
// that gives it back. A caller takes the slot before it buffers a file, so
// that the memory held by files being received is bounded too; SetMedia
// called with that context runs in the same slot. ErrBusy when no slot
// came free in time.
func (s *Service) ReserveUpload(ctx context.Context) (context.Context, func(), error) {
	if ctx.Value(uploadSlot{}) == s {
		return ctx, func() {}, nil
	}
	t := time.NewTimer(s.limits.UploadWait)
	defer t.Stop()
	select {
	case s.uploads <- struct{}{}:
	case <-t.C:
		return ctx, func() {}, fmt.Errorf("%w: %d in progress", ErrBusy, cap(s.uploads))
	case <-ctx.Done():
		return ctx, func() {}, ctx.Err()
	}
	var once sync.Once
	return context.WithValue(ctx, uploadSlot{}, s), func() { once.Do(func() { <-s.uploads }) }, nil
}

// ParseMediaKind maps the API's t parameter to a MediaKind; empty means the
// avatar image.
func ParseMediaKind(t string) (MediaKind, error) {
	switch MediaKind(t) {
	case "", MediaAvatar:
		return MediaAvatar, nil
	case MediaVideo, MediaVideoThumb:
		return MediaKind(t), nil
	}
	return "", invalid("media type %q is not image, video or video-thumbnail", t)
}

// MaxBytes returns the size limit of a media kind.
func (s *Service) MaxBytes(kind MediaKind) int {
	if kind == MediaVideo {
		return s.limits.MaxVideoBytes
	}
	return s.limits.MaxAvatarBytes
}

// checkMedia validates an upload and returns its content type. Images are
// checked by decoding them, never by trusting what the client says they are,
// but only after their header shows a size worth decoding: image/jpeg
// allocates for the declared dimensions before it reads a pixel (4 bytes
// per pixel and component for a progressive image), so a few hundred bytes
// declaring 16384×16384 would cost gigabytes. A refused size is
// UnsupportedMedia like any image we do not accept: TooLarge speaks of
// bytes, and the file is small.
func (s *Service) checkMedia(kind MediaKind, data []byte) (string, error) {
	if len(data) == 0 {
		return "", invalid("empty file")
	}
	if max := s.MaxBytes(kind); len(data) > max {
		return "", fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(data), max)
	}
	if kind == MediaVideo {
		ct := sniffVideo(data)
		if ct == "" {
			return "", ErrUnsupportedMedia
		}
		return ct, nil
	}
	cfg, err := jpeg.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotJPEG, err)
	}
	if px := int64(cfg.Width) * int64(cfg.Height); px > int64(s.limits.MaxImagePixels) {
		return "", fmt.Errorf("%w: %d×%d pixels, at most %d", ErrNotJPEG, cfg.Width, cfg.Height, s.limits.MaxImagePixels)
	}
	if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotJPEG, err)
	}
	return "image/jpeg", nil
}

// sniffVideo recognises the containers browsers and phones play: ISO BMFF
// (MP4, QuickTime, 3GP) and Matroska/WebM.
func sniffVideo(b []byte) string {
	switch {
	case len(b) >= 12 && string(b[4:8]) == "ftyp":
		switch string(b[8:10]) {
		case "qt":
			return "video/quicktime"
		case "3g":
			return "video/3gpp"
		}
		return "video/mp4"
	case len(b) >= 4 && bytes.Equal(b[:4], []byte{0x1A, 0x45, 0xDF, 0xA3}):
		if bytes.Contains(b[:min(len(b), 64)], []byte("webm")) {
			return "video/webm"
		}
		return "video/x-matroska"
	}
	return ""
}

// SetMedia stores a group's avatar, video or video thumbnail and returns the
// time of the change. Admins only. Joined members are sent EG. It runs in
// an upload slot: the one ctx carries (see ReserveUpload) or one it waits for.
func (s *Service) SetMedia(ctx context.Context, c Caller, id GroupID, kind MediaKind, data []byte, dn string) (time.Time, error) {
	if err := checkDisplayName(dn); err != nil {
		return time.Time{}, err
	}
	ctx, release, err := s.ReserveUpload(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer release()
	ct, err := s.checkMedia(kind, data)
	if err != nil {
		return time.Time{}, err
	}
	now := s.clock()
	err = s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		if err := ch.tx.PutMedia(ctx, Media{Group: id, Kind: kind, ContentType: ct, Data: data, Updated: now}); err != nil {
			return fmt.Errorf("store %s of %d: %w", kind, id, err)
		}
		switch kind {
		case MediaAvatar:
			st.group.AvatarAt = now
		case MediaVideo:
			st.group.VideoAt = now
		}
		if err := ch.tx.UpdateGroup(ctx, st.group); err != nil {
			return fmt.Errorf("update group %d: %w", id, err)
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionSetMedia, nil)
	})
	if err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// DeleteMedia removes a group's avatar (or its video with the thumbnail) and
// returns the time of the change. Admins only. Joined members are sent EG
// when there was something to delete.
func (s *Service) DeleteMedia(ctx context.Context, c Caller, id GroupID, kind MediaKind, dn string) (time.Time, error) {
	if err := checkDisplayName(dn); err != nil {
		return time.Time{}, err
	}
	now := s.clock()
	err := s.update(ctx, func(ch *change) error {
		st, err := s.lock(ctx, ch.tx, id, c.Login, true)
		if err != nil {
			return err
		}
		if err := requireAdmin(st); err != nil {
			return err
		}
		// A video goes with its thumbnail.
		kinds := []MediaKind{kind}
		switch kind {
		case MediaAvatar:
			st.group.AvatarAt = time.Time{}
		case MediaVideo, MediaVideoThumb:
			kinds = []MediaKind{MediaVideo, MediaVideoThumb}
			st.group.VideoAt = time.Time{}
		}
		changed := false
		for _, k := range kinds {
			deleted, err := ch.tx.DeleteMedia(ctx, id, k)
			if err != nil {
				return fmt.Errorf("delete %s of %d: %w", k, id, err)
			}
			changed = changed || deleted
		}
		if !changed {
			return nil
		}
		if err := ch.tx.UpdateGroup(ctx, st.group); err != nil {
			return fmt.Errorf("update group %d: %w", id, err)
		}
		return s.emitEdit(ctx, ch, st, c, dn, ActionDeleteMedia, nil)
	})
	if err != nil {
		return time.Time{}, err
	}
	return now, nil
}

// GetMedia returns a group's file to one of its waiting or joined members.
// Whether the group does not exist, the caller is not a member or there is
// no such file, the answer is the same ErrNoMedia: nothing leaks.
func (s *Service) GetMedia(ctx context.Context, c Caller, id GroupID, kind MediaKind) (Media, error) {
	if _, err := s.GetGroup(ctx, c, id); err != nil {
		switch ErrorKindOf(err) {
		case NotFound, NotMember, NotAllowed:
			return Media{}, ErrNoMedia
		}
		return Media{}, err
	}
	return s.store.Media(ctx, id, kind)
}

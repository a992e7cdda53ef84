package app

import (
	"strconv"

	"gchd/chat"
	"gchd/push"
	"gchd/registrar"
	"gchd/sipserver"
)

// pushAdapter hands the SIP server's wake-ups to the push notifier.
type pushAdapter struct{ n *push.Notifier }

func pushDevice(p registrar.Push) push.Device {
	return push.Device{Provider: p.Provider, PRID: p.PRID, Param: p.Param}
}

func (a pushAdapter) Wake(w sipserver.Wake) {
	ev := w.Event
	n := push.Notification{
		Device: pushDevice(w.Device), Login: w.Login, EventID: strconv.FormatUint(uint64(ev.MID), 10),
		Room: w.Room, Type: string(ev.Kind), Sender: w.Sender, SenderDN: ev.SenderDN,
	}
	if ev.Kind == chat.KindMessage || ev.Kind == chat.KindDirect {
		n.Text = ev.Body // sent only with push.include_text
	}
	a.n.Notify(n)
}

func (a pushAdapter) Forget(d registrar.Push) { a.n.Forget(pushDevice(d)) }

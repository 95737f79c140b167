// Live captions from the transcription worker, on the three channels it publishes:
// the lk.transcription text stream, the legacy transcription packet and JSON data messages.
// Query: ?url=ws://...&token=...[&mic=now] (default: turn the microphone on once the agent
// reports lk.agent.state=listening, so no word is spoken before it can subscribe).
// window.captionState mirrors the page for tests.

/* global LivekitClient */
const { Room, RoomEvent, ParticipantKind } = LivekitClient;

const params = new URLSearchParams(location.search);
const state = {
  connected: false,
  agentIdentity: null,
  agentState: null,
  micTrackSid: null,
  error: null,
  // channel -> segment id -> {identity, who, track, text, final}
  captions: { "text-stream": {}, legacy: {}, data: {} },
};
window.captionState = state;

const room = new Room();
const elements = new Map();

function setStatus(text, isError = false) {
  const el = document.getElementById("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

function displayName(identity) {
  const p =
    identity === room.localParticipant.identity
      ? room.localParticipant
      : room.remoteParticipants.get(identity);
  return (p && p.name) || identity;
}

// One line per segment: interims are replaced in place, the final keeps the line.
function show(channel, segmentId, identity, track, text, final) {
  state.captions[channel][segmentId] = { identity, who: displayName(identity), track, text, final };
  const key = `${channel}/${segmentId}`;
  let el = elements.get(key);
  if (!el) {
    el = document.createElement("div");
    el.className = "caption";
    el.innerHTML = '<span class="who"></span><span class="text"></span>';
    document.getElementById(channel).appendChild(el);
    elements.set(key, el);
  }
  el.classList.toggle("interim", !final);
  el.querySelector(".who").textContent = displayName(identity);
  el.querySelector(".text").textContent = text;
}

room.registerTextStreamHandler("lk.transcription", async (reader, participantInfo) => {
  const attrs = reader.info.attributes || {};
  const text = await reader.readAll();
  show(
    "text-stream",
    attrs["lk.segment_id"] || reader.info.id,
    participantInfo.identity,
    attrs["lk.transcribed_track_id"] || null,
    text,
    attrs["lk.transcription_final"] === "true",
  );
});

room.on(RoomEvent.TranscriptionReceived, (segments, participant, publication) => {
  for (const s of segments) {
    show(
      "legacy",
      s.id,
      participant ? participant.identity : "?",
      publication ? publication.trackSid : null,
      s.text,
      s.final,
    );
  }
});

room.on(RoomEvent.DataReceived, (payload, _participant, _kind, topic) => {
  if (topic !== "transcription") return;
  const m = JSON.parse(new TextDecoder().decode(payload));
  show("data", m.segment_id, m.participant_identity, m.track_sid, m.text, m.final);
});

async function enableMicrophone() {
  if (state.micTrackSid) return;
  state.micTrackSid = "pending";
  const pub = await room.localParticipant.setMicrophoneEnabled(true);
  state.micTrackSid = pub.trackSid;
  setStatus("microphone on: speak");
}

function watchAgent(participant) {
  if (participant.kind !== ParticipantKind.AGENT) return;
  state.agentIdentity = participant.identity;
  state.agentState = participant.attributes["lk.agent.state"] || null;
  document.getElementById("agent").textContent = participant.identity;
  document.getElementById("agent-state").textContent = state.agentState || "(not set)";
  if (state.agentState === "listening" && params.get("mic") !== "now") {
    enableMicrophone().catch(fail);
  }
}

function fail(err) {
  state.error = String(err && err.message ? err.message : err);
  setStatus(state.error, true);
}

room.on(RoomEvent.ParticipantConnected, watchAgent);
room.on(RoomEvent.ParticipantAttributesChanged, (_changed, participant) => watchAgent(participant));

async function main() {
  const url = params.get("url");
  const token = params.get("token");
  if (!url || !token) throw new Error("open with ?url=ws://...&token=...");
  await room.connect(url, token);
  state.connected = true;
  document.getElementById("room").textContent = room.name;
  document.getElementById("me").textContent = room.localParticipant.name || room.localParticipant.identity;
  setStatus("connected: waiting for the agent");
  room.remoteParticipants.forEach(watchAgent);
  if (params.get("mic") === "now") await enableMicrophone();
}

main().catch(fail);

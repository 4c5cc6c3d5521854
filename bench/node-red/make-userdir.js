// Writes the Node-RED user directory for Kiri's end-to-end benchmark: settings.js and flows.json.
// Called by scripts/node-red.sh run; plain Node.js, no dependencies.
//
// The flow is the Node-RED twin of Kiri's trivial function, N times:
//   mqtt in (local broker, TOPIC, QoS 0|1, payload as a Buffer)
//     -> function `msg.topic = "<prefix>/" + msg.topic; return msg;`
//     -> mqtt out (cloud broker, QoS 1, retain false)
// Chain i (0-based) subscribes to bench/<i>/# when there is more than one chain.
//
// Readiness: "Connected to broker" only says the TCP/MQTT session is up, not that the
// subscriptions are active (SUBACK), so a benchmark starting on it could lose its first messages.
// Instead a probe chain per broker publishes on a private topic and subscribes to it on the same
// connection as the benchmark chains; a broker handles a connection's packets in order, so once a
// probe comes back every SUBSCRIBE sent before it is active. When both probes (local and cloud)
// have come back, settings.js prints `node-red: ready` on stdout, and the probes stop.
// Node-RED's own log lines go to stderr, so stdout carries only that line.
"use strict";
const fs = require("fs");
const path = require("path");

function usage(msg) {
    process.stderr.write(`make-userdir: ${msg}\n`);
    process.exit(2);
}

const opts = { functions: "1", "log-level": "warn" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith("--") || argv[i + 1] === undefined) usage(`bad argument ${argv[i]}`);
    opts[argv[i].slice(2)] = argv[i + 1];
}
for (const k of ["broker-port", "cloud-port", "topic", "prefix", "qos", "dir", "tag"]) {
    if (opts[k] === undefined) usage(`--${k} is required`);
}
const port = (name) => {
    const p = Number(opts[name]);
    if (!Number.isInteger(p) || p < 1 || p > 65535) usage(`--${name} must be a TCP port, not ${opts[name]}`);
    return String(p);
};
const brokerPort = port("broker-port");
const cloudPort = port("cloud-port");
if (opts.qos !== "0" && opts.qos !== "1") usage(`--qos must be 0 or 1, not ${opts.qos}`);
const n = Number(opts.functions);
if (!Number.isInteger(n) || n < 1 || n > 1000) usage(`--functions must be 1..1000, not ${opts.functions}`);
if (opts.prefix === "" || /[#+]/.test(opts.prefix)) usage("--prefix must be a non-empty topic without wildcards");
const levels = ["fatal", "error", "warn", "info", "debug", "trace"];
if (!levels.includes(opts["log-level"])) usage(`--log-level must be one of ${levels.join(", ")}`);
// The client ids and the probe topics carry the tag (the Node-RED pid), so runs side by side
// neither kick each other off the broker nor see each other's probes.
const tag = opts.tag.replace(/[^A-Za-z0-9_-]/g, "");
const probeTopic = (which) => `kiri-node-red-probe/${tag}/${which}`;

function broker(id, name, p) {
    return {
        id, type: "mqtt-broker", name, broker: "127.0.0.1", port: p, clientid: `kiri-nr-${tag}-${name}`,
        autoConnect: true, usetls: false, protocolVersion: "4", keepalive: "60", cleansession: true,
        autoUnsubscribe: true,
        birthTopic: "", birthQos: "0", birthRetain: "false", birthPayload: "", birthMsg: {},
        closeTopic: "", closeQos: "0", closeRetain: "false", closePayload: "", closeMsg: {},
        willTopic: "", willQos: "0", willRetain: "false", willPayload: "", willMsg: {},
        userProps: "", sessionExpiry: "",
    };
}
function mqttIn(id, z, name, topic, qos, brokerId, x, y, next) {
    return {
        id, type: "mqtt in", z, name, topic, qos, datatype: "buffer", broker: brokerId,
        nl: false, rap: true, rh: 0, inputs: 0, x, y, wires: [[next]],
    };
}
function fn(id, z, name, func, outputs, x, y, wires) {
    return {
        id, type: "function", z, name, func, outputs, timeout: 0, noerr: 0,
        initialize: "", finalize: "", libs: [], x, y, wires,
    };
}
function mqttOut(id, z, name, qos, brokerId, x, y) {
    return {
        id, type: "mqtt out", z, name, topic: "", qos, retain: "false", respTopic: "",
        contentType: "", userProps: "", correl: "", expiry: "", broker: brokerId, x, y, wires: [],
    };
}

const tab = "kiri-bench-tab";
const local = "kiri-broker-local";
const cloud = "kiri-broker-cloud";
const flows = [
    { id: tab, type: "tab", label: "kiri bench", disabled: false, info: "" },
    broker(local, "local", brokerPort),
    broker(cloud, "cloud", cloudPort),
];
// Exactly the logic of Kiri's trivial function.
const relay = `msg.topic = ${JSON.stringify(opts.prefix + "/")} + msg.topic;\nreturn msg;`;
for (let i = 0; i < n; i++) {
    const topic = n === 1 ? opts.topic : `bench/${i}/#`;
    const y = 40 + 60 * i;
    flows.push(
        mqttIn(`kiri-in-${i}`, tab, `in ${i}`, topic, opts.qos, local, 120, y, `kiri-fn-${i}`),
        fn(`kiri-fn-${i}`, tab, `relay ${i}`, relay, 1, 320, y, [[`kiri-out-${i}`]]),
        mqttOut(`kiri-out-${i}`, tab, `out ${i}`, "1", cloud, 520, y),
    );
}
// The probes. They are added after the benchmark chains, so their SUBSCRIBE goes after theirs.
const py = 40 + 60 * n + 40;
const sender = [
    `const probe = global.get("kiriBench");`,
    `const timer = setInterval(() => {`,
    `    if (probe.isReady()) { clearInterval(timer); return; }`,
    `    node.send([{ topic: ${JSON.stringify(probeTopic("local"))}, payload: "probe" },`,
    `               { topic: ${JSON.stringify(probeTopic("cloud"))}, payload: "probe" }]);`,
    `}, 100);`,
    `return null;`,
].join("\n");
flows.push(
    {
        id: "kiri-probe-start", type: "inject", z: tab, name: "probe start", props: [],
        repeat: "", crontab: "", once: true, onceDelay: 0.1, topic: "", x: 120, y: py,
        wires: [["kiri-probe-send"]],
    },
    fn("kiri-probe-send", tab, "probe send", sender, 2, 320, py,
        [["kiri-probe-out-local"], ["kiri-probe-out-cloud"]]),
    mqttOut("kiri-probe-out-local", tab, "probe out local", "0", local, 520, py),
    mqttOut("kiri-probe-out-cloud", tab, "probe out cloud", "0", cloud, 520, py + 40),
    mqttIn("kiri-probe-in-local", tab, "probe in local", probeTopic("local"), "0", local, 120, py + 80,
        "kiri-probe-seen"),
    mqttIn("kiri-probe-in-cloud", tab, "probe in cloud", probeTopic("cloud"), "0", cloud, 120, py + 120,
        "kiri-probe-seen"),
    fn("kiri-probe-seen", tab, "probe seen",
        `global.get("kiriBench").seen(msg.topic.endsWith("/cloud") ? "cloud" : "local");\nreturn null;`,
        1, 320, py + 100, [[]]),
);

const settings = `// Written by bench/node-red/make-userdir.js for scripts/node-red.sh: a headless Node-RED that
// runs flows.json and nothing else (no editor, no admin API, no HTTP server at all, no telemetry,
// no update check, no projects, no palette installs).
"use strict";
const levelNames = { 10: "fatal", 20: "error", 30: "warn", 40: "info", 50: "debug", 60: "trace" };
const pending = new Set(["local", "cloud"]);
let ready = false;
module.exports = {
    flowFile: "flows.json",
    flowFilePretty: true,
    // The flow has no credentials: nothing to encrypt and no key to generate or ask for.
    credentialSecret: false,
    // No HTTP server: red.js only listens when one of these is not false (or httpStatic is set).
    httpAdminRoot: false,
    httpNodeRoot: false,
    disableEditor: true,
    uiHost: "127.0.0.1",
    uiPort: 0,
    lang: "en-US",
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    editorTheme: { projects: { enabled: false }, tours: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false }, modules: { allowInstall: false } },
    functionExternalModules: false,
    exportGlobalContextKeys: false,
    logging: {
        // Node-RED's log goes to stderr so that stdout carries only the readiness line.
        console: { level: "off" },
        stderr: {
            level: ${JSON.stringify(opts["log-level"])},
            metrics: false,
            audit: false,
            handler: () => (m) => {
                const who = m.type ? \`[\${m.type}\${m.name ? ":" + m.name : ""}] \` : "";
                const text = m.msg && m.msg.stack ? m.msg.stack : m.msg;
                process.stderr.write(\`node-red [\${levelNames[m.level] || m.level}] \${who}\${text}\\n\`);
            },
        },
    },
    functionGlobalContext: {
        // Called by the probe chains of flows.json (see make-userdir.js).
        kiriBench: {
            isReady: () => ready,
            seen: (which) => {
                pending.delete(which);
                if (!ready && pending.size === 0) {
                    ready = true;
                    process.stdout.write("node-red: ready\\n");
                }
            },
        },
    },
};
`;

fs.mkdirSync(opts.dir, { recursive: true });
fs.writeFileSync(path.join(opts.dir, "settings.js"), settings);
fs.writeFileSync(path.join(opts.dir, "flows.json"), JSON.stringify(flows, null, 2) + "\n");

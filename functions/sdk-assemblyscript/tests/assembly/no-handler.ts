// A module built with the SDK that never registers a handler: its events fail with a log line.
export * from "../../assembly/exports";

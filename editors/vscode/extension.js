// Starts `flow lsp` for .flow files (see docs/editors.md). The command comes from the setting
// `flow.server.command`, so a virtualenv's flow or extra options (--steps FILE) need no code change.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const [command, ...args] = vscode.workspace.getConfiguration("flow").get("server.command", ["flow", "lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient("flow", "Flow language server", server, {
    documentSelector: [{ scheme: "file", language: "flow" }, { scheme: "untitled", language: "flow" }],
  });
  context.subscriptions.push(client);
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };

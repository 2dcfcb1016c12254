-- A counter of changes to the facts an access decision reads (users, links, care episodes,
-- deaths, blocks), bumped by triggers in the transaction that makes the change, whichever
-- process makes it. The facts cache (access/facts.rs) keeps a user's facts across commits
-- that do not change it (the audit trail commits with every request). SQLite only: on
-- PostgreSQL the facts are read fresh every request.

CREATE TABLE facts_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO facts_version (id, n) VALUES (1, 0);

CREATE TRIGGER facts_users_insert AFTER INSERT ON users BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_users_update AFTER UPDATE ON users BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_users_delete AFTER DELETE ON users BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_links_insert AFTER INSERT ON links BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_links_update AFTER UPDATE ON links BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_links_delete AFTER DELETE ON links BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_episodes_insert AFTER INSERT ON care_episodes BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_episodes_update AFTER UPDATE ON care_episodes BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_episodes_delete AFTER DELETE ON care_episodes BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_life_insert AFTER INSERT ON client_life BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_life_update AFTER UPDATE ON client_life BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_life_delete AFTER DELETE ON client_life BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_blocks_insert AFTER INSERT ON client_blocks BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_blocks_update AFTER UPDATE ON client_blocks BEGIN UPDATE facts_version SET n = n + 1; END;
CREATE TRIGGER facts_blocks_delete AFTER DELETE ON client_blocks BEGIN UPDATE facts_version SET n = n + 1; END;
